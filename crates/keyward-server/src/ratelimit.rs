//! Per-key rate limits, enforced in process with the core's GCRA
//! ([`keyward_core::Gcra`]): `limit` requests per `window_seconds`, with
//! bursts up to `limit`. Each key's state is one atomic TAT in nanoseconds,
//! advanced by compare-and-swap, at the instant the verifier read when it
//! started (one clock read serves the decision's timing and its limit).
//!
//! A limiter left alone for a whole window is full again, the same as a
//! fresh one, so it is dropped ([`RateLimits::prune_idle`]): the map holds
//! the keys used within their window and those still cached, not every key
//! ever verified.

use crate::clock::now_ms;
use crate::telemetry as m;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use governor::clock::{Clock, DefaultClock, QuantaInstant, Reference};
use keyward_core::{Gcra, GcraOutcome, RateLimitPolicy};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How often idle limiters are dropped.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

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
    /// The state a GCRA outcome reports, its times in ticks of
    /// `ticks_per_second` rounded up to whole seconds (a refusal's retry
    /// to at least one).
    pub fn of(policy: RateLimitPolicy, outcome: GcraOutcome, ticks_per_second: u64) -> Self {
        let seconds = |ticks: u64| ticks.div_ceil(ticks_per_second);
        Self {
            limit: policy.limit,
            window_seconds: policy.window_seconds,
            remaining: outcome.remaining,
            reset_seconds: seconds(outcome.reset_in),
            retry_after_seconds: outcome.retry_in.map(|ticks| seconds(ticks).max(1)),
        }
    }

    pub fn allowed(&self) -> bool {
        self.retry_after_seconds.is_none()
    }

    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers),
    /// and `Retry-After` on a denial: for the platform to pass on, or for
    /// the gateway to answer with.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        // Names as constants: a `&str` name is parsed and checked on every use.
        const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
        const CURRENT: HeaderName = HeaderName::from_static("ratelimit");
        let policy = key_item(("q", self.limit.into()), ("w", self.window_seconds.into()));
        let current = key_item(("r", self.remaining.into()), ("t", self.reset_seconds));
        for (name, value) in [(POLICY, policy), (CURRENT, current)] {
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(name, value);
            }
        }
        if let Some(retry) = self.retry_after_seconds {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry));
        }
    }
}

/// The structured-field item `"key";<a>=<x>;<b>=<y>`, concatenated from
/// `itoa`'s digits: `format!` cost more than the rest of the headers.
fn key_item((a, x): (&str, u64), (b, y): (&str, u64)) -> String {
    let (mut x_digits, mut y_digits) = (itoa::Buffer::new(), itoa::Buffer::new());
    [
        "\"key\";",
        a,
        "=",
        x_digits.format(x),
        ";",
        b,
        "=",
        y_digits.format(y),
    ]
    .concat()
}

/// The in-process limiter's ticks: nanoseconds.
const TICKS_PER_SECOND: u64 = 1_000_000_000;

/// One key's GCRA under one policy. The verifier also keeps a handle to it
/// in the key's cache entry (see [`crate::cache::CachedKey`]), so a warm
/// verification reaches it without the map; the map stays the owner, so a
/// reloaded cache entry finds the same limiter and its state.
pub struct KeyLimiter {
    policy: RateLimitPolicy,
    /// The policy's GCRA, its divisions done once.
    gcra: Gcra,
    /// The theoretical arrival time, in nanoseconds since
    /// [`RateLimits::origin`] (0: no request yet).
    tat: AtomicU64,
    /// When it last counted a request (ms since the epoch, as the verify
    /// path's clock reads it); written on every check, next to the GCRA's
    /// own state, which every check writes anyway.
    last_checked_ms: AtomicI64,
}

impl KeyLimiter {
    /// Whether it is full again, as a fresh limiter would be: a check
    /// moves the GCRA's theoretical arrival time at most one window past
    /// the check (a full burst's worth), so a window later it is in the
    /// past whatever the requests were.
    fn is_replenished(&self, now_ms: i64) -> bool {
        let window_ms = i64::from(self.policy.window_seconds) * 1000;
        now_ms.saturating_sub(self.last_checked_ms.load(Ordering::Relaxed)) >= window_ms
    }
}

/// One GCRA per key, rebuilt when the key's policy changes. Key ids are
/// minted by the server (not chosen by clients), so the map uses foldhash
/// (randomly seeded) rather than SipHash, which cost more than the lookup.
pub struct RateLimits {
    limiters: Mutex<HashMap<String, Arc<KeyLimiter>, foldhash::fast::RandomState>>,
    /// Where every limiter's nanoseconds count from.
    origin: QuantaInstant,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            limiters: Mutex::default(),
            origin: DefaultClock::default().now(),
        }
    }
}

impl RateLimits {
    /// Counts one request against the key's limit.
    #[cfg(test)]
    pub fn check(&self, key_id: &str, policy: RateLimitPolicy, now_ms: i64) -> RateLimitState {
        let now = DefaultClock::default().now();
        self.check_with(&self.limiter_for(key_id, policy), now, now_ms)
    }

    /// Counts one request against a limiter from [`Self::limiter_for`]:
    /// made at `now` on the limiter's monotonic clock, and at `now_ms` on
    /// the wall clock (for [`Self::prune_idle`]).
    pub fn check_with(
        &self,
        entry: &KeyLimiter,
        now: QuantaInstant,
        now_ms: i64,
    ) -> RateLimitState {
        entry.last_checked_ms.store(now_ms, Ordering::Relaxed);
        let now = now.duration_since(self.origin).as_u64();
        let mut tat = entry.tat.load(Ordering::Relaxed);
        let outcome = loop {
            let outcome = entry.gcra.check(tat, now);
            let Some(next) = outcome.next_tat else {
                break outcome;
            };
            // Another thread may have counted a request since the load:
            // decide again on its TAT.
            match entry
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break outcome,
                Err(current) => tat = current,
            }
        };
        RateLimitState::of(entry.policy, outcome, TICKS_PER_SECOND)
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
                    gcra: Gcra::new(policy, TICKS_PER_SECOND),
                    tat: AtomicU64::new(0),
                    last_checked_ms: AtomicI64::new(i64::MIN),
                });
                map.insert(key_id.to_owned(), fresh.clone());
                fresh
            }
        }
    }

    /// Drops the limiters that are full again and that no cache entry holds
    /// (one that does is reached without the map, so dropping it from the
    /// map would give a reloaded entry a second, fresh limiter beside it).
    /// Only limiters indistinguishable from fresh ones go: no decision
    /// changes. Returns how many are left.
    pub fn prune_idle(&self, now_ms: i64) -> usize {
        let mut map = self
            .limiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Under the map's lock no cache entry can take a new handle: the
        // count cannot grow while it is read.
        map.retain(|_, limiter| Arc::strong_count(limiter) > 1 || !limiter.is_replenished(now_ms));
        map.len()
    }

    /// Prunes every [`PRUNE_INTERVAL`] until `shutdown` fires.
    pub async fn run_pruning(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(PRUNE_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let left = self.prune_idle(now_ms());
                    metrics::gauge!(m::RATE_LIMITERS).set(left as f64);
                }
                _ = shutdown.changed() => return,
            }
        }
    }
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
        let states: Vec<_> = (0..4).map(|_| limits.check("key_a", policy, 0)).collect();
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
        assert!(limits.check("a", one, 0).allowed());
        assert!(!limits.check("a", one, 0).allowed());
        assert!(limits.check("b", one, 0).allowed());
        let two = RateLimitPolicy {
            limit: 2,
            window_seconds: 60,
        };
        assert!(
            limits.check("a", two, 0).allowed(),
            "a raised limit applies at once"
        );
    }

    #[test]
    fn limiters_go_once_idle_for_a_window_unless_a_cache_entry_holds_them() {
        let limits = RateLimits::default();
        let minute = RateLimitPolicy {
            limit: 1,
            window_seconds: 60,
        };
        assert!(limits.check("idle", minute, 0).allowed());
        assert!(limits.check("busy", minute, 0).allowed());
        let held = limits.limiter_for("held", minute);
        let now = DefaultClock::default().now();
        assert!(limits.check_with(&held, now, 0).allowed());
        assert_eq!(limits.prune_idle(59_999), 3, "not a whole window yet");
        // "busy" is refused, but the refusal counts as use all the same.
        assert!(!limits.check("busy", minute, 30_000).allowed());
        assert_eq!(limits.prune_idle(60_000), 2, "\"idle\" goes");
        assert_eq!(limits.prune_idle(90_000), 1, "\"busy\" goes a window later");
        drop(held);
        assert_eq!(limits.prune_idle(90_000), 0, "released, \"held\" goes too");
    }
}
