//! JWT time (RFC 7519 §2 NumericDate): reading it from claims and the current time in the
//! same unit. One reader for access tokens and DPoP proofs alike.

use std::time::{SystemTime, UNIX_EPOCH};

/// A NumericDate as whole seconds: an integer, or a finite number whose fraction is
/// truncated. `None` for anything too large to be a date (|n| ≥ 10^15 s).
pub fn numeric_date(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite() && f.abs() < 1e15).map(|f| f as i64))
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_dates_are_whole_seconds() {
        let n = |v: serde_json::Value| serde_json::from_value::<serde_json::Number>(v).ok();
        assert_eq!(n(serde_json::json!(1_700_000_000)).as_ref().and_then(numeric_date), Some(1_700_000_000));
        assert_eq!(n(serde_json::json!(1_700_000_000.9)).as_ref().and_then(numeric_date), Some(1_700_000_000));
        assert_eq!(n(serde_json::json!(-5)).as_ref().and_then(numeric_date), Some(-5));
        assert_eq!(n(serde_json::json!(1e300)).as_ref().and_then(numeric_date), None);
        assert!(unix_now() > 1_700_000_000);
    }
}
