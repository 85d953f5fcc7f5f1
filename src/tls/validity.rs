//! When an X.509 certificate expires: its `notAfter`, read straight from the DER (RFC 5280
//! §4.1) by a small walker — rustls and webpki do not expose the validity, and a full X.509
//! parser would be a large dependency for one field. It reads only the outer structure up
//! to `TBSCertificate.validity`, checks DER lengths as it goes, and returns an error, never
//! panics, on anything else (fuzzed in its tests with truncations and noise).

use rustls::pki_types::CertificateDer;

/// Why a certificate's validity could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ValidityError {
    #[error("not a DER certificate: {0}")]
    Malformed(&'static str),
    #[error("the certificate's notAfter is not a valid UTCTime or GeneralizedTime")]
    BadTime,
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT Version`, optional (absent means v1).
const VERSION: u8 = 0xA0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The `notAfter` of the certificate `der`, in seconds since the Unix epoch.
pub fn not_after(der: &[u8]) -> Result<i64, ValidityError> {
    let (certificate, _) = expect(der, SEQUENCE, "the certificate is not a SEQUENCE")?;
    let (tbs, _) = expect(certificate, SEQUENCE, "the TBSCertificate is not a SEQUENCE")?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = tlv(rest)?.2;
    }
    let (_, rest) = expect(rest, INTEGER, "no serial number")?;
    let (_, rest) = expect(rest, SEQUENCE, "no signature algorithm")?;
    let (_, rest) = expect(rest, SEQUENCE, "no issuer")?;
    let (validity, _) = expect(rest, SEQUENCE, "no validity")?;
    let (_, _, after_not_before) = tlv(validity)?;
    let (tag, not_after, _) = tlv(after_not_before)?;
    parse_time(tag, not_after)
}

/// The earliest `notAfter` of `certificates` (a file's chain or CA bundle), skipping any
/// that cannot be read; `None` when none can.
pub fn earliest_not_after(certificates: &[CertificateDer<'_>]) -> Option<i64> {
    certificates.iter().filter_map(|c| not_after(c.as_ref()).ok()).min()
}

/// One TLV of tag `tag`: its value and what follows it.
fn expect<'a>(input: &'a [u8], tag: u8, what: &'static str) -> Result<(&'a [u8], &'a [u8]), ValidityError> {
    match tlv(input)? {
        (found, value, rest) if found == tag => Ok((value, rest)),
        _ => Err(ValidityError::Malformed(what)),
    }
}

/// Splits one DER TLV off `input`: (tag, value, rest). Single-byte tags only (all this
/// walker needs); definite lengths of at most four bytes.
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), ValidityError> {
    let truncated = ValidityError::Malformed("truncated");
    let (&tag, rest) = input.split_first().ok_or(truncated)?;
    if tag & 0x1F == 0x1F {
        return Err(ValidityError::Malformed("multi-byte tag"));
    }
    let (&first, mut rest) = rest.split_first().ok_or(truncated)?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 {
            return Err(ValidityError::Malformed("unsupported length"));
        }
        let (bytes, after) = rest.split_at_checked(count).ok_or(truncated)?;
        rest = after;
        bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    let (value, rest) = rest.split_at_checked(length).ok_or(truncated)?;
    Ok((tag, value, rest))
}

/// RFC 5280 §4.1.2.5: `YYMMDDHHMMSSZ` (UTCTime; years 50–99 are 19xx) or
/// `YYYYMMDDHHMMSSZ` (GeneralizedTime), always in UTC with seconds.
fn parse_time(tag: u8, text: &[u8]) -> Result<i64, ValidityError> {
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return Err(ValidityError::BadTime),
    };
    if rest.get(10) != Some(&b'Z') {
        return Err(ValidityError::BadTime);
    }
    let field = |at: usize| digits(rest.get(at..at + 2).ok_or(ValidityError::BadTime)?);
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(ValidityError::BadTime);
    }
    let days = days_from_civil(year, month, day);
    Ok(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

fn digits(text: &[u8]) -> Result<i64, ValidityError> {
    text.iter().try_fold(0i64, |n, &b| match b {
        b'0'..=b'9' => Ok(n * 10 + i64::from(b - b'0')),
        _ => Err(ValidityError::BadTime),
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    /// RFC 8705 Appendix A's certificate: notAfter 220502123709Z (a UTCTime).
    const RFC8705_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBBjCBrAIBAjAKBggqhkjOPQQDAjAPMQ0wCwYDVQQDDARtdGxzMB4XDTE4MTAx
ODEyMzcwOVoXDTIyMDUwMjEyMzcwOVowDzENMAsGA1UEAwwEbXRsczBZMBMGByqG
SM49AgEGCCqGSM49AwEHA0IABNcnyxwqV6hY8QnhxxzFQ03C7HKW9OylMbnQZjjJ
/Au08/coZwxS7LfA4vOLS9WuneIXhbGGWvsDSb0tH6IxLm8wCgYIKoZIzj0EAwID
SQAwRgIhAP0RC1E+vwJD/D1AGHGzuri+hlV/PpQEKTWUVeORWz83AiEA5x2eXZOV
bUlJSGQgjwD5vaUaKlLR50Q2DmFfQj1L+SY=
-----END CERTIFICATE-----
";

    fn rfc8705_der() -> Vec<u8> {
        CertificateDer::from_pem_slice(RFC8705_CERT.as_bytes()).unwrap().as_ref().to_vec()
    }

    /// A self-signed certificate valid until `y-m-d` 00:00:00 UTC, and that instant.
    fn rcgen_cert_until(y: i32, m: u8, d: u8) -> (Vec<u8>, i64) {
        let mut params = rcgen::CertificateParams::new(vec!["validity.test".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(y, m, d);
        let when = params.not_after.unix_timestamp();
        let key = rcgen::KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap().der().to_vec(), when)
    }

    #[test]
    fn a_utc_time_is_read() {
        // 2022-05-02T12:37:09Z (a v1 certificate: no version field).
        assert_eq!(not_after(&rfc8705_der()), Ok(1_651_495_029));
    }

    #[test]
    fn rcgen_certificates_read_back_their_not_after() {
        // UTCTime until 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5).
        for (y, m, d) in [(2031, 7, 15), (2049, 12, 31), (2050, 1, 1), (4096, 1, 1)] {
            let (der, when) = rcgen_cert_until(y, m, d);
            assert_eq!(not_after(&der), Ok(when), "{y}-{m}-{d}");
        }
        assert_eq!(rcgen_cert_until(2031, 7, 15).1, 1_941_840_000);
    }

    #[test]
    fn the_earliest_of_a_file_counts() {
        let (later, _) = rcgen_cert_until(2040, 1, 1);
        let (sooner, when) = rcgen_cert_until(2030, 6, 1);
        let certs = [CertificateDer::from(later), CertificateDer::from(b"junk".to_vec()), CertificateDer::from(sooner)];
        assert_eq!(earliest_not_after(&certs), Some(when));
        assert_eq!(earliest_not_after(&[CertificateDer::from(vec![0x30, 0x00])]), None);
    }

    #[test]
    fn times_are_checked() {
        assert_eq!(parse_time(UTC_TIME, b"491231235959Z"), Ok(2_524_607_999));
        assert_eq!(parse_time(UTC_TIME, b"500101000000Z"), Ok(-631_152_000));
        assert_eq!(parse_time(GENERALIZED_TIME, b"20000229000000Z"), Ok(951_782_400));
        for bad in
            [&b"20010229000000Z"[..], b"20001301000000Z", b"20000100000000Z", b"20000101240000Z", b"2000010100000Z"]
        {
            assert_eq!(parse_time(GENERALIZED_TIME, bad), Err(ValidityError::BadTime), "{bad:?}");
        }
        assert_eq!(parse_time(UTC_TIME, b"2205021237+0100"), Err(ValidityError::BadTime));
        assert_eq!(parse_time(UTC_TIME, b"22050212370aZ"), Err(ValidityError::BadTime));
        assert_eq!(parse_time(INTEGER, b"220502123709Z"), Err(ValidityError::BadTime));
    }

    #[test]
    fn truncated_and_corrupted_input_is_an_error_not_a_panic() {
        let (der, _) = rcgen_cert_until(2031, 7, 15);
        for end in 0..der.len() {
            // Every proper prefix misses at least the signature's end: outer lengths fail.
            assert!(not_after(&der[..end]).is_err(), "prefix of {end} bytes");
        }
        // Deterministic noise: flipped bytes and random buffers must never panic.
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5_000 {
            let mut corrupted = der.clone();
            let at = (next() as usize) % corrupted.len();
            corrupted[at] = next() as u8;
            let _ = not_after(&corrupted);
            let noise: Vec<u8> = (0..(next() % 64)).map(|_| next() as u8).collect();
            let _ = not_after(&noise);
        }
        assert!(matches!(not_after(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]), Err(ValidityError::Malformed(_))));
        assert!(matches!(not_after(&[0x30, 0x85, 1, 1, 1, 1, 1]), Err(ValidityError::Malformed(_))));
    }
}
