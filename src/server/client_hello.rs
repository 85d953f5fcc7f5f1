//! Reads the SNI from a connection's ClientHello before rustls sees any byte (rustls's
//! unbuffered connection does not expose it): the stream must begin with handshake records
//! carrying a ClientHello — in one record or split over several, which are joined — or the
//! connection is refused. [`HelloScanner`] reads the bytes as they arrive, resuming after
//! the records already read; [`scan_client_hello`] reads a complete buffer at once.
//!
//! Not here: the TLS handshake itself, and what becomes of a refusal (both in
//! `tls_stream.rs`). The scanner only frames records and reads the SNI extension; rustls
//! validates the ClientHello afterwards.
//!
//! Public for the fuzz target `fuzz/fuzz_targets/client_hello.rs`; the gateway itself uses it
//! only from `tls_stream.rs`.

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
///
/// The verdict does not depend on how the bytes arrived: the first answer other than
/// [`HelloScan::Incomplete`] is the one [`scan_client_hello`] gives for the same bytes at
/// once (the fuzz target checks it). After that answer the scanner is done with.
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
    use std::sync::Arc;

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
