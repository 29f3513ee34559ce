//! Fuzzes `KeyFormat::parse`, the first thing every presented credential
//! meets: it must never panic, never do unbounded work, and anything it
//! accepts must be a well-formed key of the default format.
//!
//! Run with `cargo +nightly fuzz run parse_key` from the repository root.

#![no_main]

use keyward_core::key::MAX_KEY_LEN;
use keyward_core::{EnvTag, KeyFormat, KeyHash};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let format = KeyFormat::default();
    let text = String::from_utf8_lossy(data);
    check(&format, &text);
    // Random bytes almost never get past the prefix; a valid-looking head
    // pushes the fuzzer into the body and checksum checks.
    check(&format, &format!("kw_live_{text}"));
});

/// Whatever `parse` accepts must re-encode as a key of `format`.
fn check(format: &KeyFormat, presented: &str) {
    let Ok(parsed) = format.parse(presented) else {
        return;
    };
    assert!(presented.len() <= MAX_KEY_LEN);
    assert!(EnvTag::parse(parsed.env_tag()).is_ok());

    let head = format!("{}_{}_", format.prefix(), parsed.env_tag());
    assert!(presented.starts_with(&head));
    let hint = parsed.hint();
    assert!(hint.starts_with(&head));
    let last4 = &presented[presented.len() - 4..];
    assert!(hint.ends_with(last4));

    assert!(parsed.hash().ct_eq(&KeyHash::of(presented)));
    let again = format.parse(presented).expect("parse is deterministic");
    assert_eq!(again.env_tag(), parsed.env_tag());
}
