//! Why a client's TLS handshake failed, as the fixed set of reasons that
//! `fapi_gateway_tls_handshake_failures_total{reason}` counts ([`HandshakeFailure`]): read
//! from the `io::Error` the TLS stream returns, which carries rustls's error or the
//! stream's own ([`StreamError`]).

use std::io;

use rustls::Error as TlsError;

use super::tls_stream::StreamError;

/// One reason a handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not finished within `listen.handshake_timeout`.
    Timeout,
    /// The first bytes were no TLS ClientHello (plain HTTP to the TLS port, say).
    NotTls,
    /// TLS records or messages that do not parse, or are too large.
    Malformed,
    /// Nothing in common or out of order: versions, cipher suites, ALPN, a message
    /// unexpected at that point.
    Protocol,
    /// The client's certificate was refused (not chaining to `client_ca`, expired, …) or,
    /// with `client_auth: required`, missing.
    BadCertificate,
    /// The client ended the handshake with an alert (it may not trust our certificate).
    PeerAlert,
    /// The client closed or reset the connection (TCP health checks that connect and close
    /// are counted here too).
    PeerClosed,
    /// A connection from `listen.proxy_protocol.from` did not start with a well-formed
    /// PROXY protocol v2 header.
    ProxyProtocol,
    Other,
}

impl HandshakeFailure {
    /// Every reason, for series created at 0 when the listener starts.
    pub const ALL: [HandshakeFailure; 9] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::NotTls,
        HandshakeFailure::Malformed,
        HandshakeFailure::Protocol,
        HandshakeFailure::BadCertificate,
        HandshakeFailure::PeerAlert,
        HandshakeFailure::PeerClosed,
        HandshakeFailure::ProxyProtocol,
        HandshakeFailure::Other,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::Malformed => "malformed",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::BadCertificate => "bad_certificate",
            HandshakeFailure::PeerAlert => "peer_alert",
            HandshakeFailure::PeerClosed => "peer_closed",
            HandshakeFailure::ProxyProtocol => "proxy_protocol",
            HandshakeFailure::Other => "other",
        }
    }

    /// The reason of a failed [`super::tls_stream::ServerTlsStream::accept`].
    pub fn of(error: &io::Error) -> Self {
        if let Some(inner) = error.get_ref() {
            if let Some(stream) = inner.downcast_ref::<StreamError>() {
                return match stream {
                    StreamError::NotAClientHello => HandshakeFailure::NotTls,
                    StreamError::MessageTooLarge => HandshakeFailure::Malformed,
                };
            }
            if let Some(tls) = inner.downcast_ref::<TlsError>() {
                return Self::of_tls(tls);
            }
        }
        match error.kind() {
            io::ErrorKind::TimedOut => HandshakeFailure::Timeout,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::WriteZero => HandshakeFailure::PeerClosed,
            _ => HandshakeFailure::Other,
        }
    }

    fn of_tls(error: &TlsError) -> Self {
        match error {
            TlsError::InvalidCertificate(_) | TlsError::NoCertificatesPresented => HandshakeFailure::BadCertificate,
            TlsError::AlertReceived(_) => HandshakeFailure::PeerAlert,
            TlsError::InvalidMessage(_) | TlsError::PeerSentOversizedRecord | TlsError::DecryptError => {
                HandshakeFailure::Malformed
            }
            TlsError::PeerIncompatible(_)
            | TlsError::PeerMisbehaved(_)
            | TlsError::InappropriateMessage { .. }
            | TlsError::InappropriateHandshakeMessage { .. }
            | TlsError::NoApplicationProtocol
            | TlsError::UnsupportedNameType => HandshakeFailure::Protocol,
            _ => HandshakeFailure::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{AlertDescription, CertificateError, InvalidMessage, PeerIncompatible};

    fn wrapped(error: TlsError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, error)
    }

    #[test]
    fn errors_map_to_their_reasons() {
        let cases = [
            (io::Error::new(io::ErrorKind::InvalidData, StreamError::NotAClientHello), "not_tls"),
            (io::Error::new(io::ErrorKind::InvalidData, StreamError::MessageTooLarge), "malformed"),
            (wrapped(TlsError::InvalidCertificate(CertificateError::UnknownIssuer)), "bad_certificate"),
            (wrapped(TlsError::NoCertificatesPresented), "bad_certificate"),
            (wrapped(TlsError::AlertReceived(AlertDescription::UnknownCA)), "peer_alert"),
            (wrapped(TlsError::InvalidMessage(InvalidMessage::MessageTooShort)), "malformed"),
            (wrapped(TlsError::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon)), "protocol"),
            (wrapped(TlsError::NoApplicationProtocol), "protocol"),
            (wrapped(TlsError::General("x".into())), "other"),
            (io::ErrorKind::UnexpectedEof.into(), "peer_closed"),
            (io::ErrorKind::ConnectionReset.into(), "peer_closed"),
            (io::ErrorKind::TimedOut.into(), "timeout"),
            (io::Error::other("unknown TLS connection state"), "other"),
        ];
        for (error, reason) in cases {
            assert_eq!(HandshakeFailure::of(&error).as_str(), reason, "{error:?}");
        }
    }

    #[test]
    fn labels_are_distinct() {
        let labels: std::collections::HashSet<_> = HandshakeFailure::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), HandshakeFailure::ALL.len());
    }
}
