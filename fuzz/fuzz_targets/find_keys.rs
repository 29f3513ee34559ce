//! Fuzzes `KeyFormat::find_keys`, which `keyward scan` runs over whole
//! files of anything: it must never panic, and everything it reports must
//! parse as a key of the format.
//!
//! Run with `cargo +nightly fuzz run find_keys` from the repository root.

#![no_main]

use keyward_core::KeyFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let format = KeyFormat::default();
    for found in format.find_keys(data) {
        assert!(found.offset < data.len());
        assert!(found.key.env_tag().len() <= keyward_core::key::MAX_TAG_LEN);
    }
});
