//! `X-Request-Id`: the client's when it is a sane identifier, else one generated without a
//! random draw per request. Passed upstream and returned to the client.

use http::HeaderValue;

/// `X-Request-Id`: taken from the client when it is a sane identifier, else generated;
/// passed upstream and returned to the client.
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The id of a request with these headers: the client's `X-Request-Id` when it is 1–128
/// characters of `[A-Za-z0-9._:-]`, else a generated one.
pub fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    let sane = |v: &&HeaderValue| {
        let b = v.as_bytes();
        (1..=128).contains(&b.len())
            && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
    };
    if let Some(v) = headers.get(X_REQUEST_ID).filter(sane) {
        return v.clone();
    }
    generated_request_id()
}

/// 32 hex digits: a random 64-bit prefix drawn once per process, then a counter passed
/// through a keyed bijection (SplitMix64's finaliser), so ids are unique per process and,
/// through the prefix, across instances, and do not show clients how many requests an
/// instance serves — without a random draw per request (the system RNG cost a visible
/// share of each request, see BENCHMARKS.md). Not secrets: nothing trusts them.
fn generated_request_id() -> HeaderValue {
    static SEED: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let (prefix, key) = *SEED.get_or_init(|| {
        let mut bytes = [0u8; 16];
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        let (prefix, key) = bytes.split_at(8);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        (word(prefix), word(key))
    });
    let mut x = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) ^ key;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    HeaderValue::from_str(&format!("{prefix:016x}{x:016x}")).unwrap_or(HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_unique_hex_with_one_prefix() {
        let ids: Vec<String> =
            (0..10_000).map(|_| generated_request_id().to_str().unwrap_or_default().to_string()).collect();
        assert!(ids.iter().all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));
        assert!(ids.iter().all(|id| id[..16] == ids[0][..16]));
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // Consecutive ids do not count up.
        assert!(ids.windows(2).any(|w| w[0][16..] > w[1][16..]));
    }
}
