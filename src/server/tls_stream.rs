//! Server-side TLS on rustls's unbuffered API: the stream owns every buffer, and frees them
//! while the connection idles.
//!
//! tokio-rustls drives rustls's buffered connection, which keeps a 4 KiB receive buffer for
//! as long as a connection lives — 40 MiB for 10 000 idle keep-alive clients. Here the
//! stream keeps three buffers of its own — TLS bytes read but not yet processed, decrypted
//! bytes not yet read, encrypted bytes not yet written — each sized to what is in flight and
//! released by [`ServerTlsStream::release_buffers`] when the connection parks.
//!
//! Writes are buffered until `poll_flush` (hyper flushes after each response), so one
//! response is normally one TLS record and one `write`. Our handshake messages and session
//! tickets go out before the stream waits for input; an alert after a fatal error is tried
//! once; the reply to a client's key update goes with our next write (rustls holds it).
//!
//! rustls's unbuffered connection does not expose the client's SNI, so it is read here from
//! the ClientHello ([`HelloScanner`]) before rustls sees any byte: the stream must
//! begin with handshake records carrying a ClientHello (split over several records or not),
//! or the connection is refused — so the name used for the gateway's Host check is the one
//! rustls negotiates (a ClientHello retried after a HelloRetryRequest may not change it).
//!
//! A client that stops reading cannot hold a response (and its upstream connection)
//! forever: when the socket takes no byte for the send timeout, writing fails with
//! `TimedOut` (nginx's `send_timeout`). The timer exists only while a write is blocked.
//!
//! The first error is final: every later read, write or flush reports it, and rustls (whose
//! unbuffered connection does not remember record-layer errors) is not called again.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes asked of the socket per read (more when a record needs it).
const READ_CHUNK: usize = 8 * 1024;
/// The most TLS bytes held unprocessed: a handshake message may take 64 KiB (rustls's own
/// limit for its buffered API), plus one record.
const MAX_INCOMING: usize = 64 * 1024 + 16 * 1024 + 512;
/// Encrypted bytes held before `poll_write` waits for the socket.
const MAX_OUTGOING: usize = 64 * 1024;

/// A TLS server connection over TCP; see the module docs.
pub struct ServerTlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// TLS bytes read from the socket that rustls has not consumed yet: the first
    /// `incoming_len` bytes of `incoming` (initialised memory, so the socket can read
    /// into it without `unsafe`).
    incoming: Vec<u8>,
    incoming_len: usize,
    /// Decrypted application data not yet read, from `plaintext_at`.
    plaintext: Vec<u8>,
    plaintext_at: usize,
    /// Encrypted bytes not yet written to the socket, from `outgoing_at`.
    outgoing: Vec<u8>,
    outgoing_at: usize,
    /// The client sent `close_notify` or closed its side.
    read_closed: bool,
    /// We queued our `close_notify`.
    write_closed: bool,
    sni: Option<String>,
    /// The ClientHello has been read for its SNI (rustls gets no byte before).
    hello_checked: bool,
    hello_scan: HelloScanner,
    /// The first error; the stream is unusable after it.
    failed: Option<io::ErrorKind>,
    /// How long a blocked write may wait for the client to read.
    send_timeout: Duration,
    /// Running while a write waits for the socket.
    write_stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// What one run of rustls over the buffered input came to.
enum Step {
    /// New plaintext is buffered.
    Plaintext,
    /// rustls needs more TLS bytes from the client.
    NeedInput,
    /// This many plaintext bytes were encrypted into the outgoing buffer.
    Encrypted(usize),
    /// The connection is closed in both directions.
    Closed,
}

/// What the caller wants from [`ServerTlsStream::process`].
#[derive(Clone, Copy)]
enum Intent<'a> {
    Read,
    Write(&'a [u8]),
    CloseNotify,
}

fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl ServerTlsStream {
    /// Runs the TLS handshake on `tcp`. The caller bounds it in time; `send_timeout` bounds
    /// every later wait for the client to take written bytes.
    pub async fn accept(tcp: TcpStream, config: Arc<rustls::ServerConfig>, send_timeout: Duration) -> io::Result<Self> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = ServerTlsStream {
            tcp,
            conn,
            incoming: Vec::new(),
            incoming_len: 0,
            plaintext: Vec::new(),
            plaintext_at: 0,
            outgoing: Vec::new(),
            outgoing_at: 0,
            read_closed: false,
            write_closed: false,
            sni: None,
            hello_checked: false,
            hello_scan: HelloScanner::default(),
            failed: None,
            send_timeout,
            write_stall: None,
        };
        std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }

    /// The server name the client asked for, when it sent one (a DNS name; an IP address
    /// in SNI is ignored, as rustls does).
    pub fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// The negotiated ALPN protocol.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The client's certificate chain, leaf first, when it presented one.
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// Whether decrypted or undecrypted client bytes are already buffered (a read would not
    /// wait for the socket).
    pub fn has_buffered_input(&self) -> bool {
        self.plaintext_at < self.plaintext.len() || self.incoming_len > 0
    }

    /// The underlying socket (to wait for readability without reading).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Bytes of buffer memory the stream holds now (for tests and diagnostics).
    pub fn buffer_capacity(&self) -> usize {
        self.incoming.capacity() + self.plaintext.capacity() + self.outgoing.capacity()
    }

    /// Frees the buffers that hold nothing, for a connection about to idle.
    pub fn release_buffers(&mut self) {
        if self.incoming_len == 0 {
            self.incoming = Vec::new();
        }
        if self.plaintext_at >= self.plaintext.len() {
            self.plaintext = Vec::new();
            self.plaintext_at = 0;
        }
        if self.outgoing_at >= self.outgoing.len() {
            self.outgoing = Vec::new();
            self.outgoing_at = 0;
        }
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.conn.is_handshaking() {
                return self.poll_flush_outgoing(cx);
            }
            match self.process(Intent::Read) {
                // The client's Finished was the last input the handshake needed.
                Ok(Step::NeedInput) if !self.conn.is_handshaking() => {}
                Ok(Step::NeedInput) if self.read_closed => {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(Step::NeedInput) => {
                    if let Poll::Ready(Err(e)) = self.poll_flush_outgoing(cx) {
                        return Poll::Ready(Err(e));
                    }
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Ok(Step::Plaintext | Step::Encrypted(_)) => {}
                Ok(Step::Closed) => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                Err(e) => {
                    self.send_alert_best_effort();
                    return Poll::Ready(Err(e));
                }
            }
        }
    }

    /// Runs rustls over the buffered TLS bytes until it has something for `intent` or
    /// needs more input. The first error sticks.
    fn process(&mut self, intent: Intent<'_>) -> io::Result<Step> {
        if let Some(kind) = self.failed {
            return Err(kind.into());
        }
        let step = self.process_records(intent);
        if let Err(e) = &step {
            self.failed = Some(e.kind());
        }
        step
    }

    fn process_records(&mut self, intent: Intent<'_>) -> io::Result<Step> {
        if !self.hello_checked {
            match self.hello_scan.scan(&self.incoming[..self.incoming_len]) {
                HelloScan::Incomplete => return Ok(Step::NeedInput),
                HelloScan::NotAHello => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the connection does not begin with a TLS ClientHello",
                    ));
                }
                HelloScan::Hello(sni) => {
                    self.sni = sni;
                    self.hello_checked = true;
                    self.hello_scan = HelloScanner::default();
                }
            }
        }
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming[..self.incoming_len]);
            let step = match state {
                Err(e) => {
                    self.discard_incoming(discard);
                    return Err(tls_error(e));
                }
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        if self.plaintext_at >= self.plaintext.len() {
                            self.plaintext.clear();
                            self.plaintext_at = 0;
                        }
                        self.plaintext.extend_from_slice(record.payload);
                    }
                    match intent {
                        Intent::Read => Some(Step::Plaintext),
                        // Kept for the next read; the write goes on.
                        Intent::Write(_) | Intent::CloseNotify => None,
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut self.outgoing, &mut encode);
                    None
                }
                // Sent before the stream next waits for input, or on flush.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    None
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Step::NeedInput),
                Ok(ConnectionState::PeerClosed) => {
                    self.read_closed = true;
                    None
                }
                Ok(ConnectionState::Closed) => {
                    self.read_closed = true;
                    Some(Step::Closed)
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => match intent {
                    Intent::Read => Some(Step::NeedInput),
                    Intent::Write(data) => {
                        let start = self.outgoing.len();
                        // Per 16 KiB record: 5 bytes of header, a content type and the AEAD tag.
                        let mut room = data.len() + (data.len() / 16384 + 1) * 64;
                        loop {
                            self.outgoing.resize(start + room, 0);
                            match traffic.encrypt(data, &mut self.outgoing[start..]) {
                                Ok(written) => {
                                    self.outgoing.truncate(start + written);
                                    break Some(Step::Encrypted(data.len()));
                                }
                                Err(EncryptError::InsufficientSize(needed)) => room = needed.required_size,
                                Err(EncryptError::EncryptExhausted) => {
                                    self.outgoing.truncate(start);
                                    return Err(io::Error::other("TLS sequence numbers exhausted"));
                                }
                            }
                        }
                    }
                    Intent::CloseNotify => {
                        let start = self.outgoing.len();
                        self.outgoing.resize(start + 64, 0);
                        let written = traffic.queue_close_notify(&mut self.outgoing[start..]).unwrap_or(0);
                        self.outgoing.truncate(start + written);
                        Some(Step::Encrypted(0))
                    }
                },
                // 0-RTT is not enabled (`max_early_data_size` is 0), so rustls never offers it.
                Ok(ConnectionState::ReadEarlyData(_)) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected TLS early data"));
                }
                Ok(_) => return Err(io::Error::other("unknown TLS connection state")),
            };
            self.discard_incoming(discard);
            if let Some(step) = step {
                return Ok(step);
            }
        }
    }

    /// After a TLS error rustls may have queued an alert: encode it and try once to send
    /// it. (The same input buffer goes back to rustls: it may hold offsets into it.)
    fn send_alert_best_effort(&mut self) {
        if !self.hello_checked || self.failed.is_none() || self.write_closed {
            return;
        }
        // Only once: the stream is finished either way.
        self.write_closed = true;
        let UnbufferedStatus { discard, state } =
            self.conn.process_tls_records(&mut self.incoming[..self.incoming_len]);
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) = state {
            encode_into(&mut self.outgoing, &mut encode);
        }
        self.discard_incoming(discard);
        if self.outgoing_at < self.outgoing.len() {
            let _ = self.tcp.try_write(&self.outgoing[self.outgoing_at..]);
        }
        self.outgoing.clear();
        self.outgoing_at = 0;
    }

    /// Reads more TLS bytes from the socket; `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming_len >= MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "TLS message too large")));
        }
        if self.incoming.len() - self.incoming_len < 1024 {
            let size = (self.incoming_len + READ_CHUNK).min(MAX_INCOMING);
            self.incoming.resize(size, 0);
        }
        // `poll_read`, not `try_read`: tokio takes a short read as proof that the socket is
        // drained, which spares an `EAGAIN` read per request.
        let mut buf = ReadBuf::new(&mut self.incoming[self.incoming_len..]);
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut buf))?;
        let read = buf.filled().len();
        self.incoming_len += read;
        Poll::Ready(Ok(read))
    }

    /// Drops the first `n` bytes of the buffered input (what rustls has consumed).
    fn discard_incoming(&mut self, n: usize) {
        let n = n.min(self.incoming_len);
        if n > 0 {
            self.incoming.copy_within(n..self.incoming_len, 0);
            self.incoming_len -= n;
        }
    }

    /// Writes the outgoing buffer to the socket.
    fn poll_flush_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.outgoing_at < self.outgoing.len() {
            let written = match Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.outgoing_at..]) {
                Poll::Ready(written) => written?,
                Poll::Pending => {
                    let timeout = self.send_timeout;
                    let stall = self.write_stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if stall.as_mut().poll(cx).is_ready() {
                        self.failed = Some(io::ErrorKind::TimedOut);
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client took no data for the send timeout",
                        )));
                    }
                    return Poll::Pending;
                }
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.write_stall = None;
            self.outgoing_at += written;
        }
        self.outgoing.clear();
        self.outgoing_at = 0;
        Poll::Ready(Ok(()))
    }
}

/// Appends what rustls has to send to `outgoing`.
fn encode_into<Data>(outgoing: &mut Vec<u8>, encode: &mut rustls::unbuffered::EncodeTlsData<'_, Data>) {
    let start = outgoing.len();
    let mut room = 4096;
    loop {
        outgoing.resize(start + room, 0);
        match encode.encode(&mut outgoing[start..]) {
            Ok(written) => {
                outgoing.truncate(start + written);
                return;
            }
            Err(EncodeError::InsufficientSize(needed)) => room = needed.required_size,
            Err(EncodeError::AlreadyEncoded) => {
                outgoing.truncate(start);
                return;
            }
        }
    }
}

impl AsyncRead for ServerTlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plaintext_at < this.plaintext.len() {
                let available = &this.plaintext[this.plaintext_at..];
                let n = available.len().min(buf.remaining());
                buf.put_slice(&available[..n]);
                this.plaintext_at += n;
                if this.plaintext_at == this.plaintext.len() {
                    this.plaintext.clear();
                    this.plaintext_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            match this.process(Intent::Read) {
                Ok(Step::Plaintext | Step::Encrypted(_)) => {}
                Ok(Step::Closed) => this.read_closed = true,
                // The client's `close_notify` came with this input.
                Ok(Step::NeedInput) if this.read_closed => {}
                Ok(Step::NeedInput) => {
                    // What rustls gave us to send (session tickets, handshake messages) goes
                    // out before we wait. (A reply to a key update waits for our next write.)
                    if let Poll::Ready(Err(e)) = this.poll_flush_outgoing(cx) {
                        return Poll::Ready(Err(e));
                    }
                    if ready!(this.poll_fill(cx))? == 0 {
                        if this.incoming_len > 0 {
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the client closed the connection in the middle of a TLS record",
                            )));
                        }
                        // The client closed TCP without `close_notify`: the end of the stream
                        // all the same (HTTP framing tells a cut-off message).
                        this.read_closed = true;
                    }
                }
                Err(e) => {
                    this.send_alert_best_effort();
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

impl AsyncWrite for ServerTlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.outgoing.len() - this.outgoing_at >= MAX_OUTGOING {
            ready!(this.poll_flush_outgoing(cx))?;
        }
        match this.process(Intent::Write(buf))? {
            Step::Encrypted(n) => Poll::Ready(Ok(n)),
            Step::Closed => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            // Only before the handshake has finished, which `accept` waits for.
            Step::NeedInput | Step::Plaintext => Poll::Ready(Err(io::Error::other("TLS handshake not finished"))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(kind) = this.failed {
            return Poll::Ready(Err(kind.into()));
        }
        ready!(this.poll_flush_outgoing(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_closed {
            this.write_closed = true;
            // Best effort: a connection already broken still gets its FIN.
            let _ = this.process(Intent::CloseNotify);
        }
        // After a failure (a client that reads nothing, say) only the FIN is attempted.
        if this.failed.is_none() {
            ready!(this.poll_flush_outgoing(cx))?;
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// What the beginning of a connection says about its ClientHello.
#[derive(Debug, PartialEq, Eq)]
pub enum HelloScan {
    /// More bytes are needed.
    Incomplete,
    /// A ClientHello, with the DNS name of its SNI extension when it has one (an IP address
    /// in SNI is ignored, as rustls does; a malformed extension counts as none, and rustls
    /// then refuses the handshake).
    Hello(Option<String>),
    /// The stream begins with something else (another record type, another handshake
    /// message, a message too large for a ClientHello).
    NotAHello,
}

/// The largest ClientHello looked for (rustls's own limit for a handshake message).
const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// Reads the ClientHello at the beginning of `tls`, joining handshake records as needed.
pub fn scan_client_hello(tls: &[u8]) -> HelloScan {
    HelloScanner::default().scan(tls)
}

/// Reads the ClientHello at the beginning of a connection as its bytes arrive, resuming
/// after the records already read (a hello sent in tiny records costs linear, not
/// quadratic, work).
#[derive(Default)]
pub struct HelloScanner {
    /// Bytes of whole records already read.
    consumed: usize,
    /// Their handshake payload, when the hello spans records.
    joined: Vec<u8>,
}

impl HelloScanner {
    /// `tls`: everything received so far (the same bytes as before, and maybe more).
    pub fn scan(&mut self, tls: &[u8]) -> HelloScan {
        loop {
            let rest = tls.get(self.consumed..).unwrap_or_default();
            if rest.len() < 5 {
                return HelloScan::Incomplete;
            }
            // Record: type 22 (handshake), legacy version, length.
            if rest[0] != 22 {
                return HelloScan::NotAHello;
            }
            let length = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            let Some(payload) = rest.get(5..5 + length) else {
                return HelloScan::Incomplete;
            };
            self.consumed += 5 + length;
            // The common case, a ClientHello in one record, needs no copy.
            if self.joined.is_empty() && payload.len() >= 4 {
                match hello_in(payload) {
                    HelloScan::Incomplete => self.joined.extend_from_slice(payload),
                    outcome => return outcome,
                }
            } else {
                self.joined.extend_from_slice(payload);
                match hello_in(&self.joined) {
                    HelloScan::Incomplete => {}
                    outcome => return outcome,
                }
            }
        }
    }
}

/// The ClientHello in a handshake message stream that begins with it.
fn hello_in(message: &[u8]) -> HelloScan {
    if message.len() < 4 {
        return HelloScan::Incomplete;
    }
    // Handshake: type 1 (ClientHello), 24-bit length.
    let length = usize::from(message[1]) << 16 | usize::from(message[2]) << 8 | usize::from(message[3]);
    if message[0] != 1 || length > MAX_CLIENT_HELLO {
        return HelloScan::NotAHello;
    }
    match message.get(4..4 + length) {
        Some(body) => HelloScan::Hello(sni_of_hello(body)),
        None => HelloScan::Incomplete,
    }
}

/// The DNS name in the SNI extension of a ClientHello body.
fn sni_of_hello(body: &[u8]) -> Option<String> {
    let mut hello = Reader(body);
    hello.take(2 + 32)?; // legacy_version, random
    hello.vec(1)?; // legacy_session_id
    hello.vec(2)?; // cipher_suites
    hello.vec(1)?; // legacy_compression_methods
    let mut extensions = Reader(hello.vec(2)?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let mut body = Reader(extensions.vec(2)?);
        if kind != 0 {
            continue;
        }
        let mut names = Reader(body.vec(2)?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let name = names.vec(2)?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                if name.parse::<std::net::IpAddr>().is_ok() {
                    return None;
                }
                let dns = rustls::pki_types::DnsName::try_from(name).ok()?;
                return Some(dns.as_ref().to_ascii_lowercase());
            }
        }
        return None;
    }
    None
}

/// A cursor over bytes for [`scan_client_hello`].
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a `width`-byte (1 or 2) length prefix.
    fn vec(&mut self, width: usize) -> Option<&'a [u8]> {
        let n = if width == 1 { usize::from(self.u8()?) } else { usize::from(self.u16()?) };
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first TLS bytes a rustls client sends to `server_name`.
    fn client_hello(server_name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut bytes = Vec::new();
        client.write_tls(&mut bytes).unwrap();
        bytes
    }

    /// `hello` (one record) re-framed as handshake records of at most `size` payload bytes.
    fn split_records(hello: &[u8], size: usize) -> Vec<u8> {
        let message = &hello[5..];
        let mut out = Vec::new();
        for chunk in message.chunks(size) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    fn sni(name: &str) -> HelloScan {
        HelloScan::Hello(Some(name.to_string()))
    }

    #[test]
    fn sni_is_read_from_a_client_hello() {
        assert_eq!(scan_client_hello(&client_hello("API.Example.test")), sni("api.example.test"));
        assert_eq!(scan_client_hello(&client_hello("192.0.2.7")), HelloScan::Hello(None), "no SNI to an IP address");
        // Application data after the ClientHello changes nothing.
        let mut more = client_hello("gateway.test");
        more.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        assert_eq!(scan_client_hello(&more), sni("gateway.test"));
    }

    #[test]
    fn a_client_hello_split_over_records_is_joined() {
        let hello = client_hello("gateway.test");
        for size in [1, 2, 3, 4, 5, 100, 1000] {
            let split = split_records(&hello, size);
            assert_eq!(scan_client_hello(&split), sni("gateway.test"), "records of {size} bytes");
            for end in 0..split.len() {
                assert_eq!(scan_client_hello(&split[..end]), HelloScan::Incomplete, "{size}-byte records, {end} bytes");
            }
        }
    }

    #[test]
    fn a_scanner_fed_byte_by_byte_finds_the_hello_once() {
        let split = split_records(&client_hello("gateway.test"), 1);
        let mut scanner = HelloScanner::default();
        for end in 0..split.len() {
            assert_eq!(scanner.scan(&split[..end]), HelloScan::Incomplete, "{end} bytes");
        }
        assert_eq!(scanner.scan(&split), sni("gateway.test"));
        // Each record was read once: what was consumed is the whole input.
        assert_eq!(scanner.consumed, split.len());
    }

    #[test]
    fn anything_but_a_client_hello_first_is_refused() {
        let hello = client_hello("gateway.test");
        // A warning alert before the ClientHello (rustls would skip it; the SNI must not be).
        let mut alert_first = vec![21, 3, 1, 0, 2, 1, 90];
        alert_first.extend_from_slice(&hello);
        assert_eq!(scan_client_hello(&alert_first), HelloScan::NotAHello);
        assert_eq!(scan_client_hello(b"GET / HTTP/1.1\r\nHost: gateway.test\r\n\r\n"), HelloScan::NotAHello);
        // A handshake message other than a ClientHello (type 2, ServerHello).
        let mut other = hello.clone();
        other[5] = 2;
        assert_eq!(scan_client_hello(&other), HelloScan::NotAHello);
        // A ClientHello claiming 16 MiB.
        assert_eq!(scan_client_hello(&[22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]), HelloScan::NotAHello);
    }

    #[test]
    fn truncated_or_bent_client_hellos_never_panic() {
        let hello = client_hello("gateway.test");
        for end in 0..hello.len() {
            assert_eq!(scan_client_hello(&hello[..end]), HelloScan::Incomplete, "prefix of {end} bytes");
        }
        for at in 0..hello.len() {
            let mut bent = hello.clone();
            bent[at] ^= 0xff;
            let _ = scan_client_hello(&bent);
        }
    }
}
