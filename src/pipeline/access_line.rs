//! The access line: its fields, and the fast way of writing it.
//!
//! The line is a `tracing` event (target `access`), so that the log filter, the JSON format
//! and a terminal's colours apply to it as to every other line. But `tracing`'s formatter
//! costs about 1.8 µs per line (field visitors, `Debug` quoting through `core::fmt`, colour
//! wrappers that paint nothing, a calendar conversion per line): most of the access log's
//! cost per request (BENCHMARKS.md, issue 13). So when the log is the plain text format on
//! the batching writer (the default when stderr is not a terminal — a container, a pipe, a
//! file), [`AccessLine::write_plain`] writes the same bytes straight into the writer's
//! buffer: the timestamp from a per-second cache, numbers without `core::fmt`, strings
//! quoted by a scan that falls back to `Debug` only for bytes that need escaping. A unit test
//! holds it to `tracing`'s own output, byte for byte.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;

/// One request's access line.
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub route: &'a str,
    /// Written unquoted (it is a token).
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub reason: &'a str,
    pub latency: Duration,
    /// To the upstream's response head; `None` when no upstream answered.
    pub upstream: Option<Duration>,
    /// The response's `Content-Length`, `-` without one.
    pub bytes: &'a str,
    pub peer: SocketAddr,
    pub user_agent: &'a str,
    pub cert: CertField<'a>,
    pub token: TokenField<'a>,
}

impl AccessLine<'_> {
    /// The line as a `tracing` event: what every format but the plain fast path writes.
    pub fn emit(&self) {
        tracing::info!(
            target: "access",
            request_id = self.request_id,
            route = self.route,
            method = %self.method,
            path = self.path,
            status = self.status,
            reason = self.reason,
            latency_us = micros(self.latency),
            upstream_us = %MicrosField(self.upstream),
            bytes = self.bytes,
            peer = %self.peer,
            user_agent = self.user_agent,
            cert = %self.cert,
            token = %self.token,
            "request"
        );
    }

    /// The line exactly as `tracing`'s plain formatter writes [`AccessLine::emit`] (no
    /// colours, no span), stamped `now`, appended to `out`.
    pub fn write_plain(&self, out: &mut Vec<u8>, now: SystemTime) {
        write_timestamp(out, now);
        out.extend_from_slice(b"  INFO access: request request_id=");
        quoted(out, self.request_id);
        out.extend_from_slice(b" route=");
        quoted(out, self.route);
        // A method is a token (RFC 9110 §9.1): written as it is, as `Display` does.
        out.extend_from_slice(b" method=");
        out.extend_from_slice(self.method.as_bytes());
        out.extend_from_slice(b" path=");
        quoted(out, self.path);
        out.extend_from_slice(b" status=");
        decimal(out, u64::from(self.status));
        out.extend_from_slice(b" reason=");
        quoted(out, self.reason);
        out.extend_from_slice(b" latency_us=");
        decimal(out, micros(self.latency));
        out.extend_from_slice(b" upstream_us=");
        match self.upstream {
            Some(upstream) => decimal(out, micros(upstream)),
            None => out.push(b'-'),
        }
        out.extend_from_slice(b" bytes=");
        quoted(out, self.bytes);
        out.extend_from_slice(b" peer=");
        display(out, &self.peer);
        out.extend_from_slice(b" user_agent=");
        quoted(out, self.user_agent);
        out.extend_from_slice(b" cert=");
        self.cert.write(out);
        out.extend_from_slice(b" token=");
        self.token.write(out);
        out.push(b'\n');
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `value` as `{:?}` writes it: quoted, escaped. Printable ASCII without `"` and `\` — every
/// field in practice — is copied as it is; anything else goes through `Debug`.
fn quoted(out: &mut Vec<u8>, value: &str) {
    if value.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        use std::io::Write as _;
        let _ = write!(out, "{value:?}");
    }
}

fn display(out: &mut Vec<u8>, value: &dyn std::fmt::Display) {
    use std::io::Write as _;
    let _ = write!(out, "{value}");
}

fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `2026-12-02T18:01:13.214012Z`, as `tracing`'s `SystemTime` timer writes it (UTC,
/// microseconds). The part up to the second is computed once per second per thread.
fn write_timestamp(out: &mut Vec<u8>, now: SystemTime) {
    thread_local! {
        static SECOND: std::cell::Cell<(u64, [u8; 20])> = const { std::cell::Cell::new((u64::MAX, [0; 20])) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (cached, mut prefix) = SECOND.get();
    if cached != seconds {
        prefix = second_prefix(seconds);
        SECOND.set((seconds, prefix));
    }
    out.extend_from_slice(&prefix);
    let micros = since.subsec_micros();
    let mut fraction = [b'0'; 6];
    let mut rest = micros;
    for digit in fraction.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&fraction);
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS.` of a Unix time (years 1970–9999).
fn second_prefix(unix_seconds: u64) -> [u8; 20] {
    let days = unix_seconds / 86_400;
    let in_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut text = *b"0000-00-00T00:00:00.";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year.min(9999));
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, in_day / 3600);
    put(14, 2, in_day / 60 % 60);
    put(17, 2, in_day % 60);
    text
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The access line's `upstream_us`: microseconds to the upstream's response head, `-` when
/// no upstream answered.
struct MicrosField(Option<Duration>);

impl std::fmt::Display for MicrosField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(d) => write!(f, "{}", micros(d)),
            None => f.write_str("-"),
        }
    }
}

/// The access line's `cert`: base64url of the first 6 bytes of the client certificate's
/// thumbprint (8 characters), or `-`.
pub struct CertField<'a>(pub Option<&'a [u8; 32]>);

impl CertField<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        use base64::Engine as _;
        let Some(thumbprint) = self.0 else {
            return out.push(b'-');
        };
        let mut text = [0u8; 8];
        match base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(&thumbprint[..6], &mut text) {
            Ok(8) => out.extend_from_slice(&text),
            _ => out.push(b'-'),
        }
    }
}

impl std::fmt::Display for CertField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = Vec::with_capacity(8);
        self.write(&mut text);
        f.write_str(std::str::from_utf8(&text).unwrap_or("-"))
    }
}

/// The access line's `token`: the token's `jti` (printable ASCII, at most 64 characters),
/// `no-jti`, a refused credential's fingerprint, or `-` — never the token itself.
pub enum TokenField<'a> {
    Jti(&'a str),
    NoJti,
    /// The first 4 bytes of the credential's SHA-256.
    Fingerprint([u8; 4]),
    None,
}

impl TokenField<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            TokenField::Jti(jti) => {
                out.extend_from_slice(b"jti:");
                out.extend(jti.bytes().filter(u8::is_ascii_graphic).take(64));
            }
            TokenField::NoJti => out.extend_from_slice(b"no-jti"),
            TokenField::Fingerprint(d) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"fp:");
                for byte in d {
                    out.push(HEX[usize::from(byte >> 4)]);
                    out.push(HEX[usize::from(byte & 0xf)]);
                }
            }
            TokenField::None => out.push(b'-'),
        }
    }
}

impl std::fmt::Display for TokenField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = Vec::with_capacity(72);
        self.write(&mut text);
        f.write_str(std::str::from_utf8(&text).unwrap_or("-"))
    }
}

/// A short, non-reversible name for the credential of a refused request: `fp:` and the first
/// 8 hex digits of the token's SHA-256. Never the token itself.
pub fn fingerprint(authorization: &HeaderValue) -> TokenField<'static> {
    let token = authorization.as_bytes().splitn(2, |&b| b == b' ').nth(1).unwrap_or_default();
    let digest = crate::jose::sha256(token);
    TokenField::Fingerprint([digest[0], digest[1], digest[2], digest[3]])
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn the_cert_field_is_eight_characters_of_the_thumbprint_or_a_dash() {
        let mut thumbprint = [0u8; 32];
        thumbprint[..6].copy_from_slice(&[0xfb, 0xff, 0x00, 0x01, 0x02, 0x03]);
        assert_eq!(CertField(Some(&thumbprint)).to_string(), "-_8AAQID");
        assert_eq!(CertField(None).to_string(), "-");
    }

    #[test]
    fn the_token_field_never_carries_more_than_a_sanitised_jti_or_a_fingerprint() {
        assert_eq!(TokenField::Jti("a b\u{7}c\nd\u{e9}").to_string(), "jti:abcd");
        assert_eq!(TokenField::Jti(&"x".repeat(100)).to_string(), format!("jti:{}", "x".repeat(64)));
        assert_eq!(TokenField::NoJti.to_string(), "no-jti");
        assert_eq!(TokenField::None.to_string(), "-");
        let field = fingerprint(&HeaderValue::from_static("Bearer secret-token"));
        let digest = crate::jose::sha256(b"secret-token");
        assert_eq!(
            field.to_string(),
            format!("fp:{:02x}{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2], digest[3])
        );
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let at = |seconds: u64, micros: u64| {
            let mut out = Vec::new();
            write_timestamp(&mut out, UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros));
            String::from_utf8(out).unwrap_or_default()
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_796_234_473, 214_012), "2026-12-02T18:01:13.214012Z");
        assert_eq!(at(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
    }

    /// A `tracing` writer that keeps what it is given.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The fast path writes what `tracing`'s plain formatter writes for the same event,
    /// byte for byte after the timestamp, for plain fields and for fields that need escaping.
    #[test]
    fn the_plain_line_is_the_tracing_formatters_line() {
        let thumbprint = [7u8; 32];
        let lines = [
            AccessLine {
                request_id: "c4462043cb6bdedf22bdcd6638c6aae6",
                route: "mtls",
                method: "GET",
                path: "/mtls/resource",
                status: 200,
                reason: "ok",
                latency: Duration::from_micros(254),
                upstream: Some(Duration::from_micros(253)),
                bytes: "2",
                peer: "127.0.0.1:37996".parse().unwrap_or_else(|e| panic!("{e}")),
                user_agent: "-",
                cert: CertField(Some(&thumbprint)),
                token: TokenField::Jti("H1i5w6DnxpKhD7CNWttncw"),
            },
            AccessLine {
                request_id: "-",
                route: "-",
                method: "PATCH",
                path: "/a\"b\\c/\u{e9}",
                status: 401,
                reason: "dpop_replayed",
                latency: Duration::from_nanos(999),
                upstream: None,
                bytes: "-",
                peer: "[::1]:443".parse().unwrap_or_else(|e| panic!("{e}")),
                user_agent: "curl/8.5 \"quoted\"\t\u{1b}[31m",
                cert: CertField(None),
                token: TokenField::Fingerprint([0xde, 0xad, 0x0b, 0xef]),
            },
        ];
        for line in &lines {
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
            tracing::subscriber::with_default(subscriber, || line.emit());
            let expected =
                String::from_utf8(captured.0.lock().map(|b| b.clone()).unwrap_or_default()).unwrap_or_default();
            let mut fast = Vec::new();
            line.write_plain(&mut fast, SystemTime::now());
            let fast = String::from_utf8(fast).unwrap_or_default();
            // The timestamps differ (two clock reads); everything after them must not.
            let (_, expected_rest) = expected.split_once('Z').unwrap_or_default();
            let (_, fast_rest) = fast.split_once('Z').unwrap_or_default();
            assert_eq!(fast_rest, expected_rest);
            assert_eq!(fast.len() - fast_rest.len(), "2026-12-02T18:01:13.214012Z".len());
            assert!(expected_rest.starts_with("  INFO access: request "), "{expected}");
        }
    }
}
