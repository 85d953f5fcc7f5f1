//! Fuzzes the ClientHello scanner that reads the SNI before rustls sees a byte: no input may
//! panic, and the verdict must not depend on how the bytes were split into reads.
#![no_main]

use fapi_gateway::server::client_hello::{HelloScan, HelloScanner, scan_client_hello};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte: how many split points follow (0 to 15), two bytes each; then the bytes
    // the client sends.
    let Some((&count, rest)) = data.split_first() else { return };
    let Some((splits, tls)) = rest.split_at_checked(usize::from(count % 16) * 2) else { return };
    let mut ends: Vec<usize> =
        splits.chunks_exact(2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])) % (tls.len() + 1)).collect();
    ends.sort_unstable();
    ends.push(tls.len());

    let whole = scan_client_hello(tls);
    // As the TLS stream does: after each read, scan everything received so far; stop at the
    // first verdict.
    let mut scanner = HelloScanner::default();
    let mut split = HelloScan::Incomplete;
    for end in ends.iter().copied() {
        split = scanner.scan(&tls[..end]);
        if split != HelloScan::Incomplete {
            break;
        }
    }
    assert_eq!(whole, split, "reads ending at {ends:?}");
});
