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
//! rustls's unbuffered connection does not expose the client's SNI, so it is read from the
//! ClientHello ([`HelloScanner`], in `client_hello.rs`) before rustls sees any byte: the
//! stream must begin with handshake records carrying a ClientHello (split over several
//! records or not), or the connection is refused — so the name used for the gateway's Host
//! check is the one rustls negotiates (a ClientHello retried after a HelloRetryRequest may
//! not change it).
//!
//! A client that stops reading cannot hold a response (and its upstream connection)
//! forever: while a write is blocked the client must keep the pace of a [`SendPolicy`]
//! (`send_pace.rs`: nginx's `send_timeout` plus a minimum rate), or writing fails with
//! `TimedOut`. What a blocked client pins here is bounded by [`MAX_OUTGOING`].
//!
//! The first error is final: every later read, write or flush reports it, and rustls (whose
//! unbuffered connection does not remember record-layer errors) is not called again.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::client_hello::{HelloScan, HelloScanner};
use super::send_pace::{SendPace, SendPolicy};
use crate::write_batch::HoldBack;

/// Bytes asked of the socket per read (more when a record needs it).
const READ_CHUNK: usize = 8 * 1024;
/// The most TLS bytes held unprocessed: a handshake message may take 64 KiB (rustls's own
/// limit for its buffered API), plus one record.
const MAX_INCOMING: usize = 64 * 1024 + 16 * 1024 + 512;
/// Encrypted bytes held before `poll_write` waits for the socket (two full records).
pub const MAX_OUTGOING: usize = 32 * 1024;

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
    /// The pace a client must keep while a write waits for the socket.
    pace: SendPace,
    /// A flush waits for the end of the runtime's round of tasks (`write_batch`).
    hold: HoldBack,
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

/// What the stream itself refuses, inside the `io::Error`s it returns (rustls's own errors
/// are there as [`rustls::Error`]): a failed handshake can be told apart by its cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("the connection does not begin with a TLS ClientHello")]
    NotAClientHello,
    #[error("TLS message too large")]
    MessageTooLarge,
}

fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl ServerTlsStream {
    /// Runs the TLS handshake on `tcp`. The caller bounds it in time; `send` bounds every
    /// later wait for the client to take written bytes.
    pub async fn accept(tcp: TcpStream, config: Arc<rustls::ServerConfig>, send: SendPolicy) -> io::Result<Self> {
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
            pace: SendPace::new(send),
            hold: HoldBack::default(),
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
                    return Err(io::Error::new(io::ErrorKind::InvalidData, StreamError::NotAClientHello));
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
                            // Exactly what is needed, not doubled: it may be held while a
                            // client is slow.
                            self.outgoing.reserve_exact(room);
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
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, StreamError::MessageTooLarge)));
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
                    let too_slow = ready!(self.pace.poll_blocked(cx));
                    self.failed = Some(too_slow.kind());
                    return Poll::Ready(Err(too_slow));
                }
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pace.took(written);
            self.outgoing_at += written;
        }
        self.pace.caught_up();
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

/// A last, non-blocking attempt at what is still queued: a response written but whose
/// flush waited for the end of the runtime's round when its connection was dropped.
impl Drop for ServerTlsStream {
    fn drop(&mut self) {
        if self.failed.is_none() && self.outgoing_at < self.outgoing.len() {
            let _ = self.tcp.try_write(&self.outgoing[self.outgoing_at..]);
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
        // At most what fills the outgoing buffer to MAX_OUTGOING (a partial write): a
        // blocked client never holds more, however much the caller hands over at once.
        if this.outgoing_at > 0 {
            // Written bytes leave the front, so the buffer never grows past the bound.
            this.outgoing.drain(..this.outgoing_at);
            this.outgoing_at = 0;
        }
        let room = MAX_OUTGOING - this.outgoing.len();
        let buf = &buf[..buf.len().min(room)];
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
        if this.outgoing_at < this.outgoing.len() {
            ready!(this.hold.poll_turn(cx));
        }
        ready!(this.poll_flush_outgoing(cx))?;
        this.hold.written();
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
