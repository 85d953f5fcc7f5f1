//! Scalar value types of `gateway.yaml` that validate while they are parsed: durations
//! (`500ms`, `60s`, `5m`, `1h`), URLs, HTTP methods and JWS algorithm names.
//!
//! Parsing inside `Deserialize` means a bad value is reported by the YAML parser itself,
//! with its `line:col`, before anything else looks at the configuration.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer};

use crate::jose::Alg;

/// A duration written as a number followed by a unit: `ms`, `s`, `m`, `h` or `d`; the number
/// may have decimals (`1.5s`, `0.25h`) as long as the result is whole milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `"60s"`, `"1.5s"`, `"5m"`, `"250ms"`, `"1h"`, `"1d"`. A bare number is refused:
    /// the unit is what makes a config readable.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("duration `{text}` needs a unit: ms, s, m, h or d (e.g. `60s`)"))?;
        let (number, unit) = text.split_at(split);
        // `30 s` reads as `30s`.
        let millis_per_unit: u64 = match unit.trim_start_matches(' ') {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                return Err(format!("duration `{text}` has unknown unit `{unit}`: use ms, s, m, h or d (e.g. `1.5s`)"));
            }
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits_only(whole)
            || !digits_only(fraction)
            || (number.contains('.') && fraction.is_empty())
        {
            return Err(format!("duration `{text}` must start with a number, e.g. `60s` or `1.5s`"));
        }
        let too_large = || format!("duration `{text}` is too large");
        let whole: u64 = whole.parse().map_err(|_| too_large())?;
        let mut millis = whole.checked_mul(millis_per_unit).ok_or_else(too_large)?;
        // The fraction, digit by digit: exact, and refused if it is finer than 1 ms.
        let mut scale = millis_per_unit;
        for digit in fraction.bytes().map(|b| u64::from(b - b'0')) {
            if !scale.is_multiple_of(10) {
                if digit == 0 {
                    continue;
                }
                return Err(format!("duration `{text}` is finer than a millisecond"));
            }
            scale /= 10;
            millis = millis.checked_add(digit * scale).ok_or_else(too_large)?;
        }
        Ok(HumanDuration(Duration::from_millis(millis)))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HumanDuration::parse(&text).map_err(de::Error::custom)
    }
}

/// An absolute `http://` or `https://` URL with a host, parsed into an [`http::Uri`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl(pub http::Uri);

impl HttpUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text.parse().map_err(|e| format!("`{text}` is not a valid URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => return Err(format!("`{text}` must start with http:// or https://")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("`{text}` has no host"));
        }
        Ok(HttpUrl(uri))
    }

    pub fn is_https(&self) -> bool {
        self.0.scheme_str() == Some("https")
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HttpUrl::parse(&text).map_err(de::Error::custom)
    }
}

/// An HTTP method name (`GET`, `POST`, …); upper case, as on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodName(pub http::Method);

impl<'de> Deserialize<'de> for MethodName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() || text.bytes().any(|b| !b.is_ascii_uppercase()) {
            return Err(de::Error::custom(format!(
                "method `{text}` must be an upper-case HTTP method such as GET or POST"
            )));
        }
        http::Method::from_bytes(text.as_bytes())
            .map(MethodName)
            .map_err(|_| de::Error::custom(format!("`{text}` is not an HTTP method")))
    }
}

/// A JWS algorithm from the allowed set. `none` and the HMAC algorithms are refused here,
/// so no configuration can ever ask for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlgName(pub Alg);

impl<'de> Deserialize<'de> for AlgName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Alg::from_name(&text).map(AlgName).ok_or_else(|| {
            de::Error::custom(format!(
                "algorithm `{text}` is not allowed: use PS256, ES256, EdDSA (FAPI 2.0), or ES384, PS384, PS512, RS256; `none` and HMAC algorithms are never accepted"
            ))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(HumanDuration::parse("60s").unwrap().0, Duration::from_secs(60));
        assert_eq!(HumanDuration::parse("5m").unwrap().0, Duration::from_secs(300));
        assert_eq!(HumanDuration::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert_eq!(HumanDuration::parse("1h").unwrap().0, Duration::from_secs(3600));
        assert_eq!(HumanDuration::parse("2d").unwrap().0, Duration::from_secs(172_800));
    }

    #[test]
    fn durations_take_decimals_down_to_milliseconds() {
        assert_eq!(HumanDuration::parse("1.5s").unwrap().0, Duration::from_millis(1500));
        assert_eq!(HumanDuration::parse("0.25h").unwrap().0, Duration::from_secs(900));
        assert_eq!(HumanDuration::parse("2.5m").unwrap().0, Duration::from_secs(150));
        assert_eq!(HumanDuration::parse("0.001s").unwrap().0, Duration::from_millis(1));
        assert_eq!(HumanDuration::parse("1.5000s").unwrap().0, Duration::from_millis(1500), "trailing zeros are fine");
        assert_eq!(HumanDuration::parse("2.0ms").unwrap().0, Duration::from_millis(2));
        assert_eq!(HumanDuration::parse("30 s").unwrap().0, Duration::from_secs(30), "a space before the unit");
        assert!(HumanDuration::parse("1.5ms").unwrap_err().contains("finer than a millisecond"));
        assert!(HumanDuration::parse("0.0001s").unwrap_err().contains("finer than a millisecond"));
        for bad in [".5s", "1.s", "1..5s", "1.5.5s"] {
            assert!(HumanDuration::parse(bad).unwrap_err().contains("must start with a number"), "{bad}");
        }
    }

    #[test]
    fn durations_without_unit_or_with_junk_are_refused() {
        assert!(HumanDuration::parse("60").unwrap_err().contains("needs a unit"));
        assert!(HumanDuration::parse("5 minutes").unwrap_err().contains("unknown unit"));
        assert!(HumanDuration::parse("s").is_err());
        assert!(HumanDuration::parse("99999999999999999999d").is_err());
    }

    #[test]
    fn urls_must_be_absolute_http() {
        assert!(HttpUrl::parse("https://as.example.com/jwks").unwrap().is_https());
        assert!(!HttpUrl::parse("http://127.0.0.1:8080").unwrap().is_https());
        assert!(HttpUrl::parse("ftp://x").is_err());
        assert!(HttpUrl::parse("/relative").is_err());
        assert!(HttpUrl::parse("not a url").is_err());
    }
}
