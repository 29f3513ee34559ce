//! Property tests for the rate-limit and duration notation the CLI reads
//! (`100/1m`, `90d`).

use keyward_core::{DurationSeconds, RateLimitPolicy, parse_duration_seconds};
use proptest::prelude::*;

proptest! {
    /// Whatever a policy prints, it reads back as the same policy.
    #[test]
    fn a_policy_reads_back_as_printed(
        limit in 1..=RateLimitPolicy::MAX_LIMIT,
        window_seconds in 1..=RateLimitPolicy::MAX_WINDOW_SECONDS,
    ) {
        let policy = RateLimitPolicy { limit, window_seconds };
        prop_assert_eq!(policy.to_string().parse::<RateLimitPolicy>(), Ok(policy));
    }

    /// Any accepted text is a policy within the bounds the API enforces.
    #[test]
    fn accepted_text_is_always_a_valid_policy(text in "[0-9]{0,11}/?[0-9]{0,7}[smhdx]?") {
        if let Ok(policy) = text.parse::<RateLimitPolicy>() {
            prop_assert!(policy.validate().is_ok());
        }
    }

    /// Arbitrary text never panics the parsers.
    #[test]
    fn arbitrary_text_is_answered(text in ".{0,40}") {
        let _ = text.parse::<RateLimitPolicy>();
        let _ = parse_duration_seconds(&text);
    }

    #[test]
    fn a_duration_reads_back_as_printed(seconds in 1u64..=10_000_000_000) {
        prop_assert_eq!(parse_duration_seconds(&DurationSeconds(seconds).to_string()), Ok(seconds));
    }
}
