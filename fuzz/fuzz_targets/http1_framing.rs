//! Fuzzes HTTP/1.1 request framing as the gateway serves it. The input is a client's byte
//! stream; hyper's HTTP/1.1 server, built by the gateway's own builder
//! ([`fapi_gateway::server::http1_builder`], default `limits`), reads it over an in-memory
//! stream in fuzzer-chosen reads, then end of file. The service answers each request as the
//! gateway's pipeline does as far as framing goes: a bad host or path (the real
//! `request_host` and `check_path`) is 400 with the body unread, a declared length over the
//! limit is 413 unread, a refusal (401) leaves the body unread, an admitted request has its
//! body read through `Limited` (413 over the limit, 400 when malformed). Optionally the
//! connection parks after every answer, as it does with many connections open: hyper's
//! connection ends and the bytes it read but did not use start a new one on the same
//! stream (the gateway's `Rewind` and `allows_reuse`, the loop of `serve_until_parked`).
//!
//! Input: the first byte sets the knobs — bits 0-1 the read sizes (whole input, 1 byte,
//! 1-64, 1-2048 bytes), bit 2 whether reads sometimes return `Pending` first, bits 3-4 the
//! body handling (read with the default 10 MiB limit, read with a 16-byte limit, refused
//! unread, or a per-request mix), bit 5 parking after every answer, bit 6 end of file right
//! after the input (a client that half-closes; otherwise the client waits until the gateway
//! has nothing left to do, then closes), bit 7 the seed of the mix. The rest is what the
//! client sends. `H1_DEBUG=1` prints what the service saw, what was written back and the
//! reference reading (to look at an artifact).
//!
//! Oracles (a panic is a finding):
//! - nothing panics, in hyper or in the gateway's code, and the connection ends (on
//!   virtual time, so hyper's 10 s request-head timer costs nothing; only a stuck
//!   connection fails);
//! - no request smuggling: an independent reference reading of the same bytes — request
//!   heads by httparse (hyper's parser), but the message framing written here from RFC 9112
//!   §6 and the chunked coding from §7.1: Transfer-Encoding with `chunked` last wins over
//!   Content-Length, Content-Length is digits and all values agree, every line ends with
//!   CRLF — yields the same sequence of requests as the service sees (method, target,
//!   version, fields), and a body the service read to its end is exactly the body the
//!   framing declared (a body that failed or hit the limit is a prefix of it). hyper may
//!   refuse more than the reference (its size limits), never accept what it refuses: no
//!   request after a body the reference finds malformed or cut short, or after an HTTP/1.0
//!   `Transfer-Encoding`, reaches the service. One documented allowance: `trailer_section`;
//! - a request with both Transfer-Encoding and Content-Length reaches the service without
//!   Content-Length, and the head the gateway would forward after its header hygiene
//!   (`prepare_request`) frames exactly the body read: no Transfer-Encoding, at most one
//!   Content-Length, equal to the body's length;
//! - a malformed or cut-short body fails with a `hyper::Error` — what the proxy answers 400
//!   `bad_request_body` and never counts as an upstream failure — never as anything else;
//! - one request at a time reaches the service, and what is written back parses as
//!   HTTP/1.x responses with nothing left over: the service's answers in request order,
//!   each with its status and its request's HTTP version, `100 Continue` only as an
//!   interim response and only to requests that expect one, and at most one more final
//!   response (hyper's own 4xx for a head it refused), last — so no more final responses
//!   than requests seen + 1.
#![no_main]

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future as _;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fapi_gateway::body::{ProxyBody, full};
use fapi_gateway::config::Config;
use fapi_gateway::lifecycle::build::server_settings;
use fapi_gateway::proxy::headers::prepare_request;
use fapi_gateway::server::rewind::Rewind;
use fapi_gateway::server::{ServerSettings, allows_reuse, http1_builder};
use fapi_gateway::uri::{check_path, request_host};
use http::header::{CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// A configuration that sets no `limits`: the gateway's defaults.
const NO_LIMITS_SET: &str = "
listen:
  address: 127.0.0.1:8443
  public_url: https://gateway.test
  tls: { cert: server.pem, key: server.key }
issuers:
  - issuer: https://as.test
    jwks_uri: https://as.test/jwks
    audiences: [https://api.test]
routes:
  - name: public
    match: { path_prefix: / }
    upstream: http://127.0.0.1:8080
    auth: none
";

/// The listener's settings for the default limits, as the gateway derives them, and
/// `limits.max_body_bytes`.
fn default_limits() -> (ServerSettings, usize) {
    let config = Config::from_yaml(NO_LIMITS_SET, "fuzz.yaml", Path::new("/nonexistent"))
        .unwrap_or_else(|e| panic!("the fuzz target's configuration: {e}"));
    let settings = server_settings(&config);
    assert!(LINGER > settings.header_read_timeout);
    (settings, usize::try_from(config.limits.max_body_bytes).unwrap_or(usize::MAX))
}

/// How long a client that has sent everything waits before it closes: longer than hyper's
/// request-head timer (`header_read_timeout`), so that an unfinished head meets it.
const LINGER: Duration = Duration::from_secs(20);

/// A body limit that fuzz inputs reach (the default one, 10 MiB, they cannot).
const SMALL_BODY_LIMIT: usize = 16;

thread_local! {
    /// The connection builder the gateway serves HTTP/1.1 with, and its body limit.
    static GATEWAY: (hyper::server::conn::http1::Builder, usize) = {
        let (settings, max_body_bytes) = default_limits();
        (http1_builder(&settings), max_body_bytes)
    };

    /// One current-thread runtime on virtual time: timers fire as soon as nothing else can
    /// run, so a connection waiting on hyper's header timer costs nothing.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, stream)) = data.split_first() else { return };
    let knobs = Knobs::new(knobs, stream.len());
    let run = Run::new(knobs.clone());
    let output = RUNTIME.with(|rt| {
        rt.block_on(async {
            match tokio::time::timeout(Duration::from_secs(3600), run.clone().serve(stream)).await {
                Ok(output) => output,
                Err(_) => panic!("the connection did not end after the input did"),
            }
        })
    });
    let seen = run.seen.take();
    if std::env::var_os("H1_DEBUG").is_some() {
        eprintln!(
            "knobs {knobs:?}, {} connection(s)\nseen {seen:#?}\noutput {:?}\nreference {:#?}",
            run.connections.get(),
            String::from_utf8_lossy(&output),
            reference(stream)
        );
    }
    check_against_reference(stream, &seen);
    check_responses(&output, &seen);
});

// ---------------------------------------------------------------------------------------
// Knobs
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum BodyHandling {
    Read(usize),
    Refuse,
}

#[derive(Clone, Debug)]
struct Knobs {
    /// Largest read (the stream's whole length for "as much as hyper asks for").
    max_read: usize,
    pending: bool,
    body: u8,
    park: bool,
    /// End of file right after the input (a client that half-closes), instead of once the
    /// gateway has nothing left to do (a client that waits for its answers, then closes).
    eof_at_once: bool,
    rng: Rng,
}

impl Knobs {
    fn new(byte: u8, len: usize) -> Self {
        let max_read = match byte & 3 {
            0 => len.max(1),
            1 => 1,
            2 => 64,
            _ => 2048,
        };
        let rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (u64::from(byte) << 32) ^ len as u64);
        Knobs {
            max_read,
            pending: byte & 4 != 0,
            body: (byte >> 3) & 3,
            park: byte & 32 != 0,
            eof_at_once: byte & 64 != 0,
            rng,
        }
    }

    fn body_handling(&self, index: usize) -> BodyHandling {
        let choice = match self.body {
            3 => (Rng(self.rng.0 ^ index as u64).next() % 3) as u8,
            other => other,
        };
        match choice {
            0 => BodyHandling::Read(GATEWAY.with(|(_, max_body_bytes)| *max_body_bytes)),
            1 => BodyHandling::Read(SMALL_BODY_LIMIT),
            _ => BodyHandling::Refuse,
        }
    }
}

/// xorshift64*: read sizes and choices, reproducible from the input alone.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0 | 1;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

// ---------------------------------------------------------------------------------------
// The client's side of the connection
// ---------------------------------------------------------------------------------------

/// Hands out `input` in reads of the knobs' sizes, then end of file; keeps what is written.
struct Client {
    input: Vec<u8>,
    pos: usize,
    max_read: usize,
    pending: bool,
    pended: bool,
    eof_at_once: bool,
    /// After the input: end of file when this fires, which on virtual time is once nothing
    /// else can run (or hyper's 10 s request-head timer has fired first).
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
    rng: Rng,
    output: Rc<RefCell<Vec<u8>>>,
}

impl AsyncRead for Client {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.pending && !this.pended && this.rng.next().is_multiple_of(2) {
            // Not ready yet; ready at once when polled again.
            this.pended = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.pended = false;
        let left = this.input.len() - this.pos;
        if left == 0 && !this.eof_at_once {
            let linger = this.linger.get_or_insert_with(|| Box::pin(tokio::time::sleep(LINGER)));
            // Pending until the timer fires, then end of file.
            return linger.as_mut().poll(cx).map(Ok);
        }
        let size = if this.max_read >= left { left } else { 1 + (this.rng.next() as usize) % this.max_read };
        let n = size.min(buf.remaining());
        buf.put_slice(&this.input[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Client {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.output.borrow_mut().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

// ---------------------------------------------------------------------------------------
// The gateway's side: hyper as the gateway configures it, a service that frames like it
// ---------------------------------------------------------------------------------------

/// What the service saw of one request.
#[derive(Debug)]
struct Seen {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: BodyRead,
    status: StatusCode,
}

#[derive(Debug)]
enum BodyRead {
    Unread,
    /// Read to its end.
    Complete(Vec<u8>),
    /// What was read before the limit was hit.
    OverLimit(Vec<u8>),
    /// What was read before hyper reported the body malformed or cut short.
    Failed(Vec<u8>),
}

/// One fuzz run: the knobs, and what the service and the parking logic see.
#[derive(Clone)]
struct Run {
    knobs: Rc<Knobs>,
    seen: Rc<RefCell<Vec<Seen>>>,
    in_flight: Rc<Cell<usize>>,
    /// Signalled when a request has been answered (the gateway's `Activity::answered`).
    answered: Rc<Notify>,
    last_request_allows_reuse: Rc<Cell<bool>>,
    /// hyper connections served on the stream (more than one only when parking).
    connections: Rc<Cell<usize>>,
}

impl Run {
    fn new(knobs: Knobs) -> Self {
        Run {
            knobs: Rc::new(knobs),
            seen: Rc::default(),
            in_flight: Rc::default(),
            answered: Rc::default(),
            last_request_allows_reuse: Rc::new(Cell::new(true)),
            connections: Rc::default(),
        }
    }

    /// Serves the client's `stream` until the connection ends; returns what was written.
    async fn serve(self, stream: &[u8]) -> Vec<u8> {
        let input_len = stream.len();
        let output = Rc::new(RefCell::new(Vec::new()));
        let client = Client {
            input: stream.to_vec(),
            pos: 0,
            max_read: self.knobs.max_read,
            pending: self.knobs.pending,
            pended: false,
            eof_at_once: self.knobs.eof_at_once,
            linger: None,
            rng: self.knobs.rng.clone(),
            output: output.clone(),
        };
        let builder = GATEWAY.with(|(builder, _)| builder.clone());
        let mut stream = Rewind::new(client, Bytes::new());
        // Each park starts a new hyper connection, after at least one request (one byte or
        // more of the input) was served on the last one.
        for connections in 1.. {
            assert!(connections <= input_len + 1, "more connections than input bytes");
            self.connections.set(connections);
            let run = self.clone();
            let service = hyper::service::service_fn(move |request| {
                let run = run.clone();
                Box::pin(async move { Ok::<_, Infallible>(run.answer(request).await) })
            });
            let served_before = self.seen.borrow().len();
            let mut connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut parking = false;
            // As `serve_until_parked` in src/server/h1.rs, parking "at once".
            let result = loop {
                tokio::select! {
                    biased;
                    result = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => break result,
                    _ = self.answered.notified(), if self.knobs.park && !parking => {
                        if self.seen.borrow().len() > served_before && self.in_flight.get() == 0 {
                            Pin::new(&mut connection).graceful_shutdown();
                            parking = true;
                        }
                    }
                }
            };
            if result.is_err() || !parking || !self.last_request_allows_reuse.get() {
                break;
            }
            let parts = connection.into_parts();
            let (mut client, unread) = parts.io.into_inner().into_parts();
            let mut pending = BytesMut::with_capacity(parts.read_buf.len() + unread.len());
            pending.extend_from_slice(&parts.read_buf);
            pending.extend_from_slice(&unread);
            if pending.is_empty() {
                // Parked with nothing buffered: wait for the client's next bytes.
                let mut next = BytesMut::with_capacity(4096);
                match client.read_buf(&mut next).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => pending = next,
                }
            }
            stream = Rewind::new(client, pending.freeze());
        }
        output.take()
    }

    /// The service: the gateway's host and path checks and body handling, as far as they
    /// bear on framing, and a record of what it saw.
    async fn answer(self, request: Request<Incoming>) -> Response<ProxyBody> {
        assert_eq!(self.in_flight.replace(1), 0, "two requests in flight on one HTTP/1.1 connection");
        self.last_request_allows_reuse.set(allows_reuse(&request));
        let index = self.seen.borrow().len();
        let (parts, body) = request.into_parts();
        let canonical =
            request_host(&parts.uri, parts.version, &parts.headers).is_ok() && check_path(parts.uri.path()).is_ok();
        let declared =
            parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let (status, read) = match self.knobs.body_handling(index) {
            _ if !canonical => (StatusCode::BAD_REQUEST, BodyRead::Unread),
            BodyHandling::Refuse => (StatusCode::UNAUTHORIZED, BodyRead::Unread),
            BodyHandling::Read(limit) if declared.is_some_and(|len| len > limit as u64) => {
                (StatusCode::PAYLOAD_TOO_LARGE, BodyRead::Unread)
            }
            BodyHandling::Read(limit) => match read_body(body, limit).await {
                read @ BodyRead::Complete(_) => (StatusCode::OK, read),
                read @ BodyRead::OverLimit(_) => (StatusCode::PAYLOAD_TOO_LARGE, read),
                read => (StatusCode::BAD_REQUEST, read),
            },
        };
        if let BodyRead::Complete(data) = &read {
            check_forwarded_framing(&parts.headers, data);
        }
        self.seen.borrow_mut().push(Seen {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            body: read,
            status,
        });
        self.in_flight.set(0);
        self.answered.notify_one();
        let mut response = Response::new(full("answered"));
        *response.status_mut() = status;
        response.headers_mut().insert("x-seq", index.into());
        response
    }
}

/// Reads `body` as the proxy streams it upstream: through `Limited`.
async fn read_body(body: Incoming, limit: usize) -> BodyRead {
    let mut body = Limited::new(body, limit);
    let mut data = Vec::new();
    loop {
        match body.frame().await {
            None => return BodyRead::Complete(data),
            Some(Ok(frame)) => {
                if let Ok(chunk) = frame.into_data() {
                    data.extend_from_slice(&chunk);
                }
            }
            Some(Err(e)) if e.is::<LengthLimitError>() => return BodyRead::OverLimit(data),
            Some(Err(e)) => {
                // What the proxy wraps as `ClientBodyError` (400 `bad_request_body`).
                assert!(e.is::<hyper::Error>(), "a body error the gateway would not take for the client's: {e:?}");
                return BodyRead::Failed(data);
            }
        }
    }
}

/// The head the gateway forwards (after `prepare_request`) must frame exactly `body`: the
/// upstream connection then sends Content-Length or chunked framing that agrees with it.
fn check_forwarded_framing(headers: &HeaderMap, body: &[u8]) {
    if headers.contains_key(TRANSFER_ENCODING) {
        assert!(!headers.contains_key(CONTENT_LENGTH), "Content-Length kept beside Transfer-Encoding: {headers:?}");
    }
    let mut forwarded = headers.clone();
    prepare_request(&mut forwarded);
    assert!(!forwarded.contains_key(TRANSFER_ENCODING), "Transfer-Encoding forwarded: {forwarded:?}");
    let lengths: Vec<_> = forwarded.get_all(CONTENT_LENGTH).iter().collect();
    assert!(lengths.len() <= 1, "several Content-Length forwarded: {forwarded:?}");
    if let Some(length) = lengths.first() {
        let length = length.to_str().ok().and_then(|v| v.parse::<usize>().ok());
        assert_eq!(length, Some(body.len()), "forwarded Content-Length {forwarded:?} for a {}-byte body", body.len());
    }
}

// ---------------------------------------------------------------------------------------
// The reference reading of the client's bytes
// ---------------------------------------------------------------------------------------

/// One request as the reference reads it.
#[derive(Debug)]
struct Expected {
    method: Method,
    uri: Uri,
    version: Version,
    /// Every field but Content-Length, in order.
    fields: Vec<(HeaderName, Vec<u8>)>,
    framing: Framing,
    /// The body's bytes (decoded, for chunked): all of them when `end` is `Complete`, else
    /// those before the fault.
    data: Vec<u8>,
    end: BodyEnd,
}

#[derive(Debug, PartialEq)]
enum Framing {
    Length(u64),
    Chunked,
}

#[derive(Debug, PartialEq)]
enum BodyEnd {
    Complete,
    Truncated,
    Malformed(&'static str),
}

/// The requests in `stream`, in order, up to the first the reference cannot read whole
/// (that one included when its head is sound and only its body is not).
fn reference(stream: &[u8]) -> Vec<Expected> {
    let mut requests = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut request = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(head_len)) = request.parse(&stream[pos..]) else { break };
        let (Some(method), Some(target), Some(version)) = (request.method, request.path, request.version) else {
            break;
        };
        let (Ok(method), Ok(uri)) = (Method::from_bytes(method.as_bytes()), Uri::try_from(target)) else { break };
        let version = if version == 1 { Version::HTTP_11 } else { Version::HTTP_10 };
        let mut fields = Vec::new();
        let mut lengths = Vec::new();
        let mut codings = Vec::new();
        let mut sound = true;
        for field in request.headers.iter() {
            let Ok(name) = HeaderName::from_bytes(field.name.as_bytes()) else {
                sound = false;
                break;
            };
            if name == CONTENT_LENGTH {
                lengths.push(field.value);
                continue;
            }
            if name == TRANSFER_ENCODING {
                codings.extend(list_elements(field.value));
            }
            fields.push((name, field.value.to_vec()));
        }
        if !sound {
            break;
        }
        let saw_te = fields.iter().any(|(name, _)| name == TRANSFER_ENCODING);
        let framing = if saw_te {
            // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing;
            // a request whose final coding is not chunked cannot be read (400).
            if version == Version::HTTP_10 || !codings.last().is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")) {
                break;
            }
            Framing::Chunked
        } else if lengths.is_empty() {
            Framing::Length(0)
        } else {
            // RFC 9110 §8.6: 1*DIGIT; several values (fields or list elements) must agree.
            let values: Option<Vec<u64>> = lengths.iter().flat_map(|v| list_elements(v)).map(digits).collect();
            match values.as_deref() {
                Some([first, rest @ ..]) if rest.iter().all(|v| v == first) => Framing::Length(*first),
                _ => break,
            }
        };
        let body_start = pos + head_len;
        let (data, end, body_len) = match framing {
            Framing::Length(n) => {
                let available = stream.len() - body_start;
                match usize::try_from(n) {
                    Ok(n) if n <= available => (stream[body_start..body_start + n].to_vec(), BodyEnd::Complete, n),
                    _ => (stream[body_start..].to_vec(), BodyEnd::Truncated, available),
                }
            }
            Framing::Chunked => chunked(&stream[body_start..]),
        };
        let complete = end == BodyEnd::Complete;
        requests.push(Expected { method, uri, version, fields, framing, data, end });
        if !complete {
            break;
        }
        pos = body_start + body_len;
    }
    requests
}

/// The elements of a comma-separated field value, trimmed of optional whitespace; empty
/// elements are ignored (RFC 9110 §5.6.1).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(|e| e.trim_ascii()).filter(|e| !e.is_empty())
}

fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Decodes a chunked body (RFC 9112 §7.1) at the start of `bytes`: its data, how it ends,
/// and how many bytes of `bytes` it takes.
///
/// Strict where the syntax decides where the message ends: chunk sizes are hex digits that
/// fit 64 bits, every line ends with CRLF (a bare CR or LF is malformed), chunk data is
/// followed by CRLF. Liberal where it cannot: whatever follows the size up to the CRLF is
/// accepted if it is spaces and tabs or starts (after them) with `;` — a chunk extension,
/// which the gateway ignores.
fn chunked(bytes: &[u8]) -> (Vec<u8>, BodyEnd, usize) {
    let mut data = Vec::new();
    let mut pos = 0;
    loop {
        // chunk-size [ chunk-ext ] CRLF
        let Some(line) = crlf_line(&bytes[pos..]) else { return (data, BodyEnd::Truncated, bytes.len()) };
        let Ok(line) = line else { return (data, BodyEnd::Malformed("bare CR or LF in a chunk-size line"), pos) };
        let hex = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let spaces = line[hex..].iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        let rest = &line[hex + spaces..];
        if hex == 0 || !(rest.is_empty() || rest.starts_with(b";")) {
            return (data, BodyEnd::Malformed("not a chunk-size line"), pos);
        }
        let Some(size) = line[..hex].iter().try_fold(0u64, |size, &b| {
            let digit = u64::from(char::from(b).to_digit(16)?);
            size.checked_mul(16)?.checked_add(digit)
        }) else {
            return (data, BodyEnd::Malformed("chunk size overflows"), pos);
        };
        pos += line.len() + 2;
        if size == 0 {
            return match trailer_section(&bytes[pos..]) {
                Ok(Some(len)) => (data, BodyEnd::Complete, pos + len),
                Ok(None) => (data, BodyEnd::Truncated, bytes.len()),
                Err(why) => (data, BodyEnd::Malformed(why), pos),
            };
        }
        // chunk-data CRLF
        let available = bytes.len() - pos;
        let Some(size) = usize::try_from(size).ok().filter(|&s| s <= available) else {
            data.extend_from_slice(&bytes[pos..]);
            return (data, BodyEnd::Truncated, bytes.len());
        };
        data.extend_from_slice(&bytes[pos..pos + size]);
        pos += size;
        match bytes.get(pos..pos + 2) {
            Some(b"\r\n") => pos += 2,
            None if bytes[pos..].iter().all(|&b| b == b'\r') => return (data, BodyEnd::Truncated, bytes.len()),
            _ => return (data, BodyEnd::Malformed("chunk data not followed by CRLF"), pos),
        }
    }
}

/// The line at the start of `bytes` up to its CRLF (without it): `None` when no line end
/// has arrived yet, `Err` for a bare CR or LF before it.
fn crlf_line(bytes: &[u8]) -> Option<Result<&[u8], ()>> {
    let end = bytes.iter().position(|&b| b == b'\r' || b == b'\n')?;
    match (bytes[end], bytes.get(end + 1)) {
        (b'\r', Some(b'\n')) => Some(Ok(&bytes[..end])),
        (b'\r', None) => None,
        _ => Some(Err(())),
    }
}

/// The length of the trailer section and final CRLF at the start of `bytes` (RFC 9112
/// §7.1.2: `*( field-line CRLF ) CRLF`), `None` when it has not all arrived.
///
/// The one allowance: hyper reads a trailer line up to its CR, which must be followed by
/// LF, and takes a bare LF before it as part of the line (`0\r\nX: 1\n\nGET / …\r\n\r\n`
/// is one request to hyper, whose trailer section ends at the first CRLF CRLF; a parser
/// that takes the bare LF as a line end, as RFC 9112 §2.2 lets it for field lines, sees
/// the trailer section end at `\n\n` and a second request). The reference follows hyper
/// here ([`TRAILER_BARE_LF_IS_LINE_DATA`]): the gateway is the first HTTP parser on the
/// connection (it terminates TLS), so no other parser splits this stream, and trailers are
/// never forwarded (`prepare_request` drops `Trailer`, without which hyper's client sends
/// none). Set it to `false` to see the difference.
fn trailer_section(bytes: &[u8]) -> Result<Option<usize>, &'static str> {
    let mut pos = 0;
    loop {
        match crlf_line(&bytes[pos..]) {
            None => return Ok(None),
            Some(Ok([])) => return Ok(Some(pos + 2)),
            Some(Ok(line)) => pos += line.len() + 2,
            Some(Err(())) if TRAILER_BARE_LF_IS_LINE_DATA => {
                // Up to the first CR, which must start a CRLF.
                let Some(cr) = bytes[pos..].iter().position(|&b| b == b'\r') else { return Ok(None) };
                match bytes.get(pos + cr + 1) {
                    Some(b'\n') => pos += cr + 2,
                    Some(_) => return Err("bare CR in the trailer section"),
                    None => return Ok(None),
                }
            }
            Some(Err(())) => return Err("bare CR or LF in the trailer section"),
        }
    }
}

/// See [`trailer_section`].
const TRAILER_BARE_LF_IS_LINE_DATA: bool = true;

/// Holds the service's view against the reference's, request by request.
fn check_against_reference(stream: &[u8], seen: &[Seen]) {
    let expected = reference(stream);
    for (index, seen) in seen.iter().enumerate() {
        let Some(expected) = expected.get(index) else {
            panic!("request {index} reached the service, the reference reads only {}: {seen:?}", expected.len());
        };
        // (The reference stops after a body it cannot read whole: so far, every earlier
        // request was read whole.)
        assert_eq!(seen.method, expected.method, "request {index}");
        assert_eq!(seen.uri, expected.uri, "request {index}");
        assert_eq!(seen.version, expected.version, "request {index}");
        let mut got: Vec<(&str, &[u8])> = seen
            .headers
            .iter()
            .filter(|(name, _)| **name != CONTENT_LENGTH)
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        let mut want: Vec<(&str, &[u8])> = expected.fields.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        got.sort_by_key(|(name, _)| *name);
        want.sort_by_key(|(name, _)| *name);
        assert_eq!(got, want, "request {index}: fields");
        let lengths: Vec<_> = seen.headers.get_all(CONTENT_LENGTH).iter().map(|v| digits(v.as_bytes())).collect();
        match expected.framing {
            Framing::Chunked => assert!(lengths.is_empty(), "request {index}: Content-Length beside chunked"),
            Framing::Length(0) if lengths.is_empty() => {}
            Framing::Length(n) => assert_eq!(lengths, [Some(n)], "request {index}: Content-Length"),
        }
        match &seen.body {
            BodyRead::Unread => {}
            BodyRead::Complete(data) => {
                assert_eq!(
                    expected.end,
                    BodyEnd::Complete,
                    "request {index}: hyper read a body the reference does not"
                );
                assert_eq!(data, &expected.data, "request {index}: body");
            }
            BodyRead::OverLimit(data) | BodyRead::Failed(data) => {
                assert!(expected.data.starts_with(data), "request {index}: body read so far is not the framed body");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// What was written back
// ---------------------------------------------------------------------------------------

/// The written bytes are HTTP/1.x responses, nothing else: the service's, in request order,
/// then at most one of hyper's own.
fn check_responses(output: &[u8], seen: &[Seen]) {
    let mut pos = 0;
    let mut next = 0;
    let mut interim = 0;
    let expecting = seen.iter().filter(|s| s.headers.contains_key(EXPECT)).count();
    let mut hyper_error = false;
    while pos < output.len() {
        assert!(!hyper_error, "bytes after hyper's error response: {:?}", String::from_utf8_lossy(output));
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(&output[pos..]) {
            Ok(httparse::Status::Complete(head)) => head,
            other => panic!("not a response head at byte {pos} ({other:?}): {:?}", String::from_utf8_lossy(output)),
        };
        let (Some(version), Some(code)) = (response.version, response.code) else { unreachable!("parsed") };
        assert!(version <= 1 && (100..600).contains(&code), "status line {version} {code}");
        pos += head;
        if code < 200 {
            assert_eq!(code, 100, "an interim response other than 100 Continue");
            interim += 1;
            assert!(interim <= expecting, "more 100 Continue than requests that expect one");
            continue;
        }
        let field = |name: &str| response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
        let length = field("content-length").and_then(digits);
        let body = match field("x-seq").and_then(digits) {
            Some(seq) => {
                let seq = usize::try_from(seq).unwrap_or(usize::MAX);
                assert_eq!(seq, next, "response for request {seq} where {next} was due");
                assert!(seq < seen.len(), "a response for request {seq}, which the service never saw");
                let request = &seen[seq];
                assert_eq!(code, request.status.as_u16(), "request {seq}: status");
                assert_eq!(version == 1, request.version == Version::HTTP_11, "request {seq}: response version");
                next += 1;
                if request.method == Method::HEAD { 0 } else { length.expect("a Content-Length") }
            }
            None => {
                assert!((400..500).contains(&code), "hyper's own response is {code}");
                hyper_error = true;
                length.unwrap_or(0)
            }
        };
        let body = usize::try_from(body).unwrap_or(usize::MAX);
        assert!(output.len() - pos >= body, "response body cut short");
        pos += body;
    }
    // So: final responses ≤ requests seen + 1.
    assert!(next + usize::from(hyper_error) <= seen.len() + 1);
}
