//! Fuzzes configuration loading (`gateway.yaml`): any text is either a configuration or an
//! error naming a place in the file, never a panic or a hang.
#![no_main]

use fapi_gateway::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = Config::from_yaml(text, "fuzz.yaml", std::path::Path::new("/nonexistent")) {
        let _ = e.to_string();
    }
});
