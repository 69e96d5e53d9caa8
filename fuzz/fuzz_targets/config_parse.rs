//! The config loader on arbitrary bytes: never a panic, and a rejected
//! config always has problems, each one line naming the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use supervisor::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/fuzz/supervisor.toml");
    if let Err(e) = Config::parse(text, path) {
        assert!(!e.problems.is_empty(), "an error without a problem");
        for p in &e.problems {
            assert!(p.starts_with("/fuzz/supervisor.toml"), "{p:?}");
            assert!(!p.contains('\n'), "{p:?}");
        }
    }
});
