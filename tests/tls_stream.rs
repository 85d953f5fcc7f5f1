//! The server TLS stream on rustls's unbuffered API, against a tokio-rustls client over
//! real sockets: SNI and ALPN, data larger than a record both ways, bytes arriving one at a
//! time, `close_notify` each way, a client that is not TLS or vanishes mid-record, and
//! buffers released while idle.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::pki::TestPki;
use common::raw::{Tls, try_connect};
use fapi_gateway::server::tls_stream::ServerTlsStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long the server side waits for a client that does not read.
const SEND_TIMEOUT: fapi_gateway::server::SendPolicy =
    fapi_gateway::server::SendPolicy { timeout: Duration::from_millis(500), min_rate: 0 };

/// Accepts one TLS connection on `listener` with the test PKI's server configuration.
async fn accept(listener: &TcpListener, pki: &TestPki) -> std::io::Result<ServerTlsStream> {
    let (tcp, _) = listener.accept().await?;
    tokio::time::timeout(Duration::from_secs(10), ServerTlsStream::accept(tcp, pki.server_config(), SEND_TIMEOUT))
        .await
        .expect("the handshake must end within 10 s")
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A connected client and server over loopback.
async fn pair(pki: &TestPki, alpn: &[&[u8]], sni: &'static str) -> (Tls, ServerTlsStream) {
    let (listener, addr) = listener().await;
    let client = try_connect(addr, pki.rustls_client_config(None, alpn), sni);
    let (client, server) = tokio::join!(client, accept(&listener, pki));
    (client.unwrap(), server.unwrap())
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[tokio::test]
async fn reports_sni_and_alpn_of_the_handshake() {
    let pki = TestPki::new();
    let (_client, server) = pair(&pki, &[b"h2"], "gateway.test").await;
    assert_eq!(server.sni(), Some("gateway.test"));
    assert_eq!(server.alpn_protocol(), Some(&b"h2"[..]));
    assert!(server.peer_certificates().is_none(), "no client certificate was asked for");

    let (_client, server) = pair(&pki, &[b"http/1.1"], "127.0.0.1").await;
    assert_eq!(server.sni(), None, "rustls sends no SNI to an IP address");
    assert_eq!(server.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn data_larger_than_a_record_crosses_both_ways() {
    let pki = TestPki::new();
    let (mut client, mut server) = pair(&pki, &[b"http/1.1"], "gateway.test").await;
    let sent = pattern(300 * 1024);
    let echo = tokio::spawn(async move {
        // Small reads: records are handed out over several calls.
        let mut received = Vec::new();
        let mut chunk = [0u8; 1000];
        while received.len() < 300 * 1024 {
            let n = server.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the stream ended after {} bytes", received.len());
            received.extend_from_slice(&chunk[..n]);
        }
        server.write_all(&received).await.unwrap();
        server.flush().await.unwrap();
        server
    });
    let (mut reader, mut writer) = tokio::io::split(&mut client);
    let write = async {
        writer.write_all(&sent).await.unwrap();
        writer.flush().await.unwrap();
    };
    let read = async {
        let mut back = vec![0u8; sent.len()];
        reader.read_exact(&mut back).await.unwrap();
        back
    };
    let ((), back) = tokio::join!(write, read);
    assert!(back == sent, "the echo differs from what was sent");
    echo.await.unwrap();
}

/// Forwards `client`'s bytes to `server` one byte per write, and `server`'s back whole.
async fn trickle(client: TcpStream, server: TcpStream) {
    client.set_nodelay(true).unwrap();
    server.set_nodelay(true).unwrap();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async move {
        let mut buf = [0u8; 4096];
        loop {
            let n = client_read.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                let _ = server_write.shutdown().await;
                return;
            }
            for byte in &buf[..n] {
                if server_write.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        }
    };
    let down = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}

#[tokio::test]
async fn records_arriving_one_byte_at_a_time_are_reassembled() {
    let pki = TestPki::new();
    let (listener, addr) = listener().await;
    let (relay, relay_addr) = self::listener().await;
    tokio::spawn(async move {
        let (client, _) = relay.accept().await.unwrap();
        let server = TcpStream::connect(addr).await.unwrap();
        trickle(client, server).await;
    });
    let client = try_connect(relay_addr, pki.rustls_client_config(None, &[b"http/1.1"]), "gateway.test");
    let (client, server) = tokio::join!(client, accept(&listener, &pki));
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    assert_eq!(server.sni(), Some("gateway.test"), "SNI from a ClientHello that came byte by byte");
    let request = pattern(5000);
    client.write_all(&request).await.unwrap();
    client.flush().await.unwrap();
    let mut received = vec![0u8; request.len()];
    server.read_exact(&mut received).await.unwrap();
    assert!(received == request);
    server.write_all(b"answer").await.unwrap();
    server.flush().await.unwrap();
    let mut answer = [0u8; 6];
    client.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"answer");
}

#[tokio::test]
async fn close_notify_ends_the_stream_in_each_direction() {
    let pki = TestPki::new();
    let (mut client, mut server) = pair(&pki, &[b"http/1.1"], "gateway.test").await;
    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap(); // close_notify, then FIN
    let mut received = Vec::new();
    server.read_to_end(&mut received).await.unwrap();
    assert_eq!(received, b"last words");

    server.write_all(b"goodbye").await.unwrap();
    server.shutdown().await.unwrap();
    // tokio-rustls reports a close without `close_notify` as an error: a clean end here
    // means the server sent its `close_notify`.
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.expect("a clean TLS close");
    assert_eq!(answer, b"goodbye");
}

#[tokio::test]
async fn a_client_that_is_not_tls_fails_the_handshake() {
    let pki = TestPki::new();
    let (listener, addr) = listener().await;
    let client = async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: gateway.test\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
        answer
    };
    let (answer, server) = tokio::join!(client, accept(&listener, &pki));
    let error = server.err().expect("plain HTTP must fail the TLS handshake");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
    assert!(answer.is_empty() || answer[0] == 0x15, "only a TLS alert may be sent back: {answer:?}");
}

#[tokio::test]
async fn a_client_gone_mid_handshake_fails_it() {
    let pki = TestPki::new();
    let (listener, addr) = listener().await;
    let client = async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        // The first bytes of a ClientHello record, then nothing.
        tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
        drop(tcp);
    };
    let ((), server) = tokio::join!(client, accept(&listener, &pki));
    assert_eq!(server.err().expect("handshake cut off").kind(), std::io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn a_client_gone_mid_record_is_an_error_not_an_end() {
    let pki = TestPki::new();
    let (listener, addr) = listener().await;
    let (relay, relay_addr) = self::listener().await;
    // A relay that passes the handshake, then only the first 10 bytes of the next record.
    let relay_task = tokio::spawn(async move {
        let (mut client, _) = relay.accept().await.unwrap();
        let mut server = TcpStream::connect(addr).await.unwrap();
        let (mut up, mut down) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
        let mut phase = 0;
        loop {
            tokio::select! {
                n = client.read(&mut up) => {
                    let n = n.unwrap_or(0);
                    if n == 0 { return; }
                    phase += 1;
                    // The client's handshake flights (ClientHello, then Finished) pass whole.
                    let pass = if phase <= 2 { n } else { n.min(10) };
                    server.write_all(&up[..pass]).await.unwrap();
                    if phase > 2 { drop(server); return; }
                }
                n = server.read(&mut down) => {
                    let n = n.unwrap_or(0);
                    if n == 0 { return; }
                    client.write_all(&down[..n]).await.unwrap();
                }
            }
        }
    });
    let client = try_connect(relay_addr, pki.rustls_client_config(None, &[b"http/1.1"]), "gateway.test");
    let (client, server) = tokio::join!(client, accept(&listener, &pki));
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    client.write_all(&pattern(2000)).await.unwrap();
    client.flush().await.unwrap();
    relay_task.await.unwrap();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), server.read(&mut buf)).await.expect("no hang");
    assert_eq!(read.expect_err("a cut record").kind(), std::io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn idle_stream_releases_its_buffers_and_goes_on() {
    let pki = TestPki::new();
    let (mut client, mut server) = pair(&pki, &[b"http/1.1"], "gateway.test").await;
    for round in 0..3 {
        client.write_all(format!("ping {round}").as_bytes()).await.unwrap();
        client.flush().await.unwrap();
        let mut buf = [0u8; 64];
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], format!("ping {round}").as_bytes());
        server.write_all(b"pong").await.unwrap();
        server.flush().await.unwrap();
        let mut pong = [0u8; 4];
        client.read_exact(&mut pong).await.unwrap();
        assert!(server.buffer_capacity() > 0, "buffers are kept while the connection is busy");
        server.release_buffers();
        assert_eq!(server.buffer_capacity(), 0, "an idle stream holds no buffer");
    }
}

#[tokio::test]
async fn server_config_from_the_gateway_is_accepted() {
    // The gateway's own configuration (client certificates optional): a client presenting
    // one is reported with it.
    let pki = TestPki::new();
    let tls = fapi_gateway::config::ServerTls {
        cert: pki.server_cert_path(),
        key: pki.server_key_path(),
        client_auth: fapi_gateway::config::ClientAuth::Optional,
        client_ca: None,
    };
    let config = fapi_gateway::tls::server::server_config(&tls).unwrap();
    let (listener, addr) = listener().await;
    let identity = pki.self_signed_client("client-1");
    let client = try_connect(addr, pki.rustls_client_config(Some(&identity), &[b"http/1.1"]), "gateway.test");
    let server = async {
        let (tcp, _) = listener.accept().await.unwrap();
        ServerTlsStream::accept(tcp, Arc::clone(&config), SEND_TIMEOUT).await
    };
    let (client, server) = tokio::join!(client, server);
    let (_client, server) = (client.unwrap(), server.unwrap());
    let chain = server.peer_certificates().expect("the client certificate");
    assert_eq!(chain[0].as_ref(), identity.cert_chain()[0].as_ref());
}

/// A relay between a client and `server` that hands the client's bytes to `tamper` (with
/// the number of client reads so far) before passing them on.
async fn tampering_relay(
    server: SocketAddr,
    tamper: impl Fn(usize, &mut Vec<u8>) + Send + 'static,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let (relay, relay_addr) = listener().await;
    let task = tokio::spawn(async move {
        let (client, _) = relay.accept().await.unwrap();
        let upstream = TcpStream::connect(server).await.unwrap();
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = upstream.into_split();
        let up = async move {
            let mut buf = vec![0u8; 64 * 1024];
            for reads in 0.. {
                let n = client_read.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    let _ = server_write.shutdown().await;
                    return;
                }
                let mut bytes = buf[..n].to_vec();
                tamper(reads, &mut bytes);
                if server_write.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        };
        let down = async move {
            let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            let _ = client_write.shutdown().await;
        };
        tokio::join!(up, down);
    });
    (relay_addr, task)
}

#[tokio::test]
async fn a_record_before_the_client_hello_fails_the_handshake() {
    // rustls skips a warning alert there; the SNI read for the Host check must not be
    // skipped with it, so the connection is refused.
    let pki = TestPki::new();
    let (listener, addr) = listener().await;
    let (relay, _task) = tampering_relay(addr, |reads, bytes| {
        if reads == 0 {
            bytes.splice(0..0, [0x15, 0x03, 0x01, 0x00, 0x02, 0x01, 0x5a]);
        }
    })
    .await;
    let client = try_connect(relay, pki.rustls_client_config(None, &[b"http/1.1"]), "gateway.test");
    let (client, server) = tokio::join!(client, accept(&listener, &pki));
    assert!(client.is_err(), "the client's handshake cannot complete");
    assert_eq!(server.err().expect("refused").kind(), std::io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn a_handshake_message_claiming_16_mib_is_refused() {
    let pki = TestPki::new();
    let (listener, addr) = listener().await;
    let client = async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff]).await.unwrap();
        tcp
    };
    let (_tcp, server) = tokio::join!(client, accept(&listener, &pki));
    assert_eq!(server.err().expect("refused").kind(), std::io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn a_corrupted_record_fails_the_stream_for_good() {
    let pki = TestPki::new();
    let (listener, addr) = listener().await;
    // The client's third read is its first application data: flip a bit of the ciphertext.
    let (relay, _task) = tampering_relay(addr, |reads, bytes| {
        if reads == 2 {
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
        }
    })
    .await;
    let client = try_connect(relay, pki.rustls_client_config(None, &[b"http/1.1"]), "gateway.test");
    let (client, server) = tokio::join!(client, accept(&listener, &pki));
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    // Make sure the client's Finished went through before the data (reads 0 and 1).
    server.write_all(b"hello").await.unwrap();
    server.flush().await.unwrap();
    let mut hello = [0u8; 5];
    client.read_exact(&mut hello).await.unwrap();
    client.write_all(b"tampered").await.unwrap();
    client.flush().await.unwrap();
    let mut buf = [0u8; 64];
    let error = server.read(&mut buf).await.expect_err("a record that fails authentication");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    // The error is final: no more reading, writing, or rustls.
    assert_eq!(server.read(&mut buf).await.expect_err("still failed").kind(), std::io::ErrorKind::InvalidData);
    assert!(server.write_all(b"more").await.is_err(), "no writes after a fatal error");
    // The client hears why: a fatal alert, not a clean end.
    let mut rest = Vec::new();
    assert!(client.read_to_end(&mut rest).await.is_err(), "the client must see the alert");
}

#[tokio::test]
async fn a_client_that_stops_reading_times_the_write_out() {
    let pki = TestPki::new();
    let (client, mut server) = pair(&pki, &[b"http/1.1"], "gateway.test").await;
    // 64 MiB into a client that reads nothing: the socket buffers fill, then the write waits.
    let write = async {
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..64 {
            server.write_all(&chunk).await?;
        }
        server.flush().await
    };
    let outcome = tokio::time::timeout(Duration::from_secs(10), write).await.expect("the write must give up, not hang");
    assert_eq!(outcome.expect_err("a client that reads nothing").kind(), std::io::ErrorKind::TimedOut);
    drop(client);
}

#[tokio::test]
async fn a_slow_reader_that_keeps_reading_is_served_whole() {
    let pki = TestPki::new();
    let (mut client, mut server) = pair(&pki, &[b"http/1.1"], "gateway.test").await;
    let total = 8 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        server.write_all(&vec![b'y'; total]).await.unwrap();
        server.flush().await.unwrap();
        server
    });
    // Reads in small bites with pauses shorter than the send timeout.
    let mut received = 0;
    let mut buf = vec![0u8; 256 * 1024];
    while received < total {
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0);
        received += n;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.await.unwrap();
}
