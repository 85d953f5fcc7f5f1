//! PROXY protocol version 2 (HAProxy's binary header, which AWS NLB and others send): the
//! client's address, written by a balancer in front of the TLS handshake. Read only from
//! `listen.proxy_protocol.from`, where it is required; the address then
//! stands for the connection's peer in logs, `X-Forwarded-For` and `Forwarded`. A `LOCAL`
//! header (the balancer's own health check) keeps the balancer's address. Anything that is
//! not a well-formed header ends the connection: nothing reads on in a stream whose start
//! was garbled.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;

/// The 12-byte signature every v2 header starts with.
const SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];
/// Addresses and TLVs (AWS adds a few: the VPC endpoint id, …) fit well within this.
const MAX_PAYLOAD: usize = 2048;

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("the connection does not start with a PROXY protocol v2 header")]
    NoSignature,
    #[error("PROXY protocol version or command not supported")]
    Unsupported,
    #[error("the PROXY protocol header is longer than {MAX_PAYLOAD} bytes")]
    TooLong,
    #[error("the PROXY protocol address block is shorter than its family needs")]
    Truncated,
    #[error("the connection ended or failed inside the PROXY protocol header")]
    Io,
}

/// Reads the header from the start of `stream` (exactly its bytes: the TLS handshake
/// follows). `Ok(Some(client))` for a proxied TCP connection, `Ok(None)` for `LOCAL` or an
/// address family other than IPv4 and IPv6 (the peer stays the balancer).
pub async fn read_header<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut head = [0u8; 16];
    stream.read_exact(&mut head).await.map_err(|_| ProxyHeaderError::Io)?;
    let length = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if head[..12] != SIGNATURE {
        return Err(ProxyHeaderError::NoSignature);
    }
    if length > MAX_PAYLOAD {
        return Err(ProxyHeaderError::TooLong);
    }
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await.map_err(|_| ProxyHeaderError::Io)?;
    parse(&head, &payload)
}

/// The client address of a header (`head`: its first 16 bytes; `payload`: the rest).
pub fn parse(head: &[u8; 16], payload: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    if head[..12] != SIGNATURE {
        return Err(ProxyHeaderError::NoSignature);
    }
    let (version, command) = (head[12] >> 4, head[12] & 0x0F);
    if version != 2 || command > 1 {
        return Err(ProxyHeaderError::Unsupported);
    }
    if usize::from(u16::from_be_bytes([head[14], head[15]])) != payload.len() {
        return Err(ProxyHeaderError::Truncated);
    }
    if command == 0 {
        // LOCAL: the balancer speaking for itself (health checks).
        return Ok(None);
    }
    let (family, transport) = (head[13] >> 4, head[13] & 0x0F);
    let port = |at: usize| u16::from_be_bytes([payload[at], payload[at + 1]]);
    match (family, transport) {
        (1, 1) => {
            if payload.len() < 12 {
                return Err(ProxyHeaderError::Truncated);
            }
            let ip = Ipv4Addr::new(payload[0], payload[1], payload[2], payload[3]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port(8))))
        }
        (2, 1) => {
            if payload.len() < 36 {
                return Err(ProxyHeaderError::Truncated);
            }
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&payload[..16]);
            Ok(Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port(32))))
        }
        // UNSPEC, UNIX sockets, datagrams: no TCP client address to take.
        _ => Ok(None),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A header as HAProxy's `send-proxy-v2` writes it, with optional TLV bytes.
    pub fn header(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        let length = u16::try_from(addresses.len() + tlvs.len()).unwrap();
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(addresses);
        out.extend_from_slice(tlvs);
        out
    }

    fn split(bytes: &[u8]) -> ([u8; 16], &[u8]) {
        (bytes[..16].try_into().unwrap(), &bytes[16..])
    }

    #[tokio::test]
    async fn an_ipv4_header_gives_the_client_and_leaves_the_rest_unread() {
        let addresses = [203, 0, 113, 7, 10, 0, 0, 1, 0xC3, 0x50, 0x20, 0xFB]; // :50000 -> :8443
        let mut stream = header(1, 0x11, &addresses, &[0x04, 0x00, 0x01, 0x00]);
        stream.extend_from_slice(b"\x16\x03\x01 the ClientHello");
        let mut reader = &stream[..];
        let client = read_header(&mut reader).await.unwrap();
        assert_eq!(client, Some("203.0.113.7:50000".parse().unwrap()));
        assert_eq!(reader, b"\x16\x03\x01 the ClientHello", "exactly the header was read");
    }

    #[test]
    fn ipv6_local_and_other_families() {
        let mut v6 = vec![0u8; 36];
        v6[..16].copy_from_slice(&"2001:db8::5".parse::<Ipv6Addr>().unwrap().octets());
        v6[32..34].copy_from_slice(&443u16.to_be_bytes());
        let bytes = header(1, 0x21, &v6, &[]);
        let (head, payload) = split(&bytes);
        assert_eq!(parse(&head, payload), Ok(Some("[2001:db8::5]:443".parse().unwrap())));
        let local = header(0, 0x00, &[], &[]);
        let (head, payload) = split(&local);
        assert_eq!(parse(&head, payload), Ok(None), "LOCAL keeps the balancer's address");
        let unix = header(1, 0x31, &[0u8; 216], &[]);
        let (head, payload) = split(&unix);
        assert_eq!(parse(&head, payload), Ok(None));
    }

    #[tokio::test]
    async fn malformed_headers_are_refused() {
        let good = header(1, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2], &[]);
        let mut wrong_version = good.clone();
        wrong_version[12] = 0x11;
        let mut wrong_command = good.clone();
        wrong_command[12] = 0x2F;
        let short = header(1, 0x11, &[1, 2, 3, 4], &[]);
        let mut too_long = good[..16].to_vec();
        too_long[14..16].copy_from_slice(&4096u16.to_be_bytes());
        for (bytes, expected) in [
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), ProxyHeaderError::NoSignature),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(), ProxyHeaderError::NoSignature),
            (wrong_version, ProxyHeaderError::Unsupported),
            (wrong_command, ProxyHeaderError::Unsupported),
            (short, ProxyHeaderError::Truncated),
            (too_long, ProxyHeaderError::TooLong),
            (good[..20].to_vec(), ProxyHeaderError::Io),
        ] {
            let mut reader = &bytes[..];
            assert_eq!(read_header(&mut reader).await, Err(expected), "{:?}", &bytes[..bytes.len().min(16)]);
        }
    }
}
