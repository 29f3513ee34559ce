//! Fuzzes the rate-limit and duration notation the CLI reads (`100/1m`,
//! `90d`): never a panic, and whatever is accepted prints back to text
//! that reads as the same value.
//!
//! Run with `cargo +nightly fuzz run notation` from the repository root.

#![no_main]

use keyward_core::{DurationSeconds, RateLimitPolicy, parse_duration_seconds};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(policy) = text.parse::<RateLimitPolicy>() {
        assert!(policy.validate().is_ok());
        assert_eq!(policy.to_string().parse::<RateLimitPolicy>(), Ok(policy));
    }
    if let Ok(seconds) = parse_duration_seconds(&text) {
        assert_eq!(parse_duration_seconds(&DurationSeconds(seconds).to_string()), Ok(seconds));
    }
});
