//! Per-key rate limits, enforced in process with a GCRA (the `governor`
//! crate): `limit` requests per `window_seconds`, with bursts up to `limit`.

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use keyward_core::RateLimitPolicy;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The state reported to clients after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitState {
    pub limit: u32,
    pub window_seconds: u32,
    pub remaining: u32,
    /// Seconds until the full limit is available again.
    pub reset_seconds: u64,
    /// On denial: seconds until one more request will be allowed.
    pub retry_after_seconds: Option<u64>,
}

impl RateLimitState {
    pub fn allowed(&self) -> bool {
        self.retry_after_seconds.is_none()
    }
}

/// A direct GCRA that reports its state, so responses can say what remains.
type StatefulLimiter =
    RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// One key's GCRA under one policy. The verifier also keeps a handle to it
/// in the key's cache entry (see [`crate::cache::CachedKey`]), so a warm
/// verification reaches it without the map; the map stays the owner, so a
/// reloaded cache entry finds the same limiter and its state.
pub struct KeyLimiter {
    policy: RateLimitPolicy,
    /// The policy's emission interval, computed once: a division per check
    /// is measurable on the verify path.
    period: Duration,
    limiter: StatefulLimiter,
}

/// One GCRA per key, rebuilt when the key's policy changes. Key ids are
/// minted by the server (not chosen by clients), so the map uses foldhash
/// (randomly seeded) rather than SipHash, which cost more than the lookup.
#[derive(Default)]
pub struct RateLimits {
    limiters: Mutex<HashMap<String, Arc<KeyLimiter>, foldhash::fast::RandomState>>,
    clock: DefaultClock,
}

impl RateLimits {
    /// Counts one request against the key's limit.
    #[cfg(test)]
    pub fn check(&self, key_id: &str, policy: RateLimitPolicy) -> RateLimitState {
        self.check_with(&self.limiter_for(key_id, policy))
    }

    /// Counts one request against a limiter from [`Self::limiter_for`].
    pub fn check_with(&self, entry: &KeyLimiter) -> RateLimitState {
        let (policy, period) = (entry.policy, entry.period);
        match entry.limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                RateLimitState {
                    limit: policy.limit,
                    window_seconds: policy.window_seconds,
                    remaining,
                    reset_seconds: ceil_seconds(period * (policy.limit - remaining)),
                    retry_after_seconds: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let retry = ceil_seconds(wait).max(1);
                RateLimitState {
                    limit: policy.limit,
                    window_seconds: policy.window_seconds,
                    remaining: 0,
                    reset_seconds: ceil_seconds(period * policy.limit).max(retry),
                    retry_after_seconds: Some(retry),
                }
            }
        }
    }

    /// The key's limiter for `policy`: the existing one, or a fresh one
    /// (full burst) if there was none or its policy differs.
    pub fn limiter_for(&self, key_id: &str, policy: RateLimitPolicy) -> Arc<KeyLimiter> {
        let mut map = self
            .limiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match map.get(key_id) {
            Some(existing) if existing.policy == policy => existing.clone(),
            _ => {
                let fresh = Arc::new(KeyLimiter {
                    policy,
                    period: emission_interval(policy),
                    limiter: RateLimiter::direct_with_clock(quota(policy), self.clock.clone())
                        .with_middleware::<StateInformationMiddleware>(),
                });
                map.insert(key_id.to_owned(), fresh.clone());
                fresh
            }
        }
    }
}

fn emission_interval(policy: RateLimitPolicy) -> Duration {
    Duration::from_secs(u64::from(policy.window_seconds)) / policy.limit.max(1)
}

fn quota(policy: RateLimitPolicy) -> Quota {
    let burst = NonZeroU32::new(policy.limit).unwrap_or(NonZeroU32::MIN);
    // A policy's limit is at least 1 and its window at least 1 s (validated at
    // the API), so the interval is at least 1 ns; fall back to 1 ns defensively.
    let period = emission_interval(policy).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(burst))
        .allow_burst(burst)
}

fn ceil_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_refuses_with_retry_after() {
        let limits = RateLimits::default();
        let policy = RateLimitPolicy {
            limit: 3,
            window_seconds: 60,
        };
        let states: Vec<_> = (0..4).map(|_| limits.check("key_a", policy)).collect();
        assert_eq!(
            states.iter().map(|s| s.remaining).collect::<Vec<_>>(),
            [2, 1, 0, 0]
        );
        assert!(states[..3].iter().all(RateLimitState::allowed));
        let denied = states[3];
        assert!(!denied.allowed());
        let retry = denied.retry_after_seconds.unwrap();
        assert!(
            (1..=20).contains(&retry),
            "one token every 20 s, got {retry}"
        );
    }

    #[test]
    fn keys_are_limited_independently_and_policy_changes_reset() {
        let limits = RateLimits::default();
        let one = RateLimitPolicy {
            limit: 1,
            window_seconds: 60,
        };
        assert!(limits.check("a", one).allowed());
        assert!(!limits.check("a", one).allowed());
        assert!(limits.check("b", one).allowed());
        let two = RateLimitPolicy {
            limit: 2,
            window_seconds: 60,
        };
        assert!(
            limits.check("a", two).allowed(),
            "a raised limit applies at once"
        );
    }
}
