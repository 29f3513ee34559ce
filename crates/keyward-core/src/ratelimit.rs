//! The rate-limit decision: GCRA, the generic cell rate algorithm, for a
//! [`RateLimitPolicy`] of `limit` requests per window with bursts of up to
//! `limit`.
//!
//! The state is one number, the theoretical arrival time (TAT): when the key
//! would be idle again had its requests come evenly spaced. A request is let
//! through unless the TAT is more than `limit − 1` intervals ahead of now,
//! and each one let through pushes it one interval (`window / limit`)
//! further. So a fresh key takes a burst of `limit` at once and then one
//! request per interval; over any span `t` it lets through at most
//! `limit + t / interval`.
//!
//! Time is integer ticks of a monotonic clock the caller reads (nanoseconds
//! in process): the caller passes the instant it already read, and stores
//! the new TAT however its concurrency requires (an atomic compare-and-swap
//! in the server). The shared limit's Redis script runs the same arithmetic
//! in microseconds.

use crate::model::RateLimitPolicy;

/// One policy's GCRA, in ticks of `ticks_per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    limit: u32,
    /// `window / limit`, at least one tick.
    interval: u64,
    /// `(limit − 1) × interval`: how far ahead of now the TAT may be with
    /// one more request still let through.
    tolerance: u64,
}

/// What one request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraOutcome {
    /// The TAT to store when the request is let through; `None` when it is
    /// refused (the state does not change).
    pub next_tat: Option<u64>,
    /// Requests that could still be let through at this instant.
    pub remaining: u32,
    /// Ticks until the full limit is available again.
    pub reset_in: u64,
    /// On refusal: ticks until one more request will be let through.
    pub retry_in: Option<u64>,
}

impl GcraOutcome {
    pub fn allowed(&self) -> bool {
        self.next_tat.is_some()
    }
}

impl Gcra {
    /// A policy's limit is at least 1 and its window at least 1 s (checked
    /// by [`RateLimitPolicy::validate`]); out-of-range values are clamped
    /// so that the arithmetic stays defined.
    pub fn new(policy: RateLimitPolicy, ticks_per_second: u64) -> Self {
        let limit = policy.limit.max(1);
        let window = u64::from(policy.window_seconds).saturating_mul(ticks_per_second);
        let interval = (window / u64::from(limit)).max(1);
        Self {
            limit,
            interval,
            tolerance: interval.saturating_mul(u64::from(limit - 1)),
        }
    }

    /// Decides a request at `now` on a key whose stored TAT is `tat` (0 for
    /// a key with no state: any TAT in the past means the same).
    pub fn check(&self, tat: u64, now: u64) -> GcraOutcome {
        let tat = tat.max(now);
        let allowed_from = tat.saturating_sub(self.tolerance);
        if now < allowed_from {
            return GcraOutcome {
                next_tat: None,
                remaining: 0,
                reset_in: tat - now,
                retry_in: Some(allowed_from - now),
            };
        }
        let next_tat = tat.saturating_add(self.interval);
        let ahead = next_tat - now;
        let room = (self.tolerance + self.interval).saturating_sub(ahead);
        GcraOutcome {
            next_tat: Some(next_tat),
            // At most `limit`: `room` is at most `limit × interval`.
            remaining: u32::try_from(room / self.interval).unwrap_or(self.limit),
            reset_in: ahead,
            retry_in: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NS: u64 = 1_000_000_000;

    fn gcra(limit: u32, window_seconds: u32) -> Gcra {
        Gcra::new(
            RateLimitPolicy {
                limit,
                window_seconds,
            },
            NS,
        )
    }

    /// Runs requests at the given instants on a key whose TAT is `tat`;
    /// returns each outcome and the final TAT.
    fn run_from(
        gcra: &Gcra,
        mut tat: u64,
        at: impl IntoIterator<Item = u64>,
    ) -> (Vec<GcraOutcome>, u64) {
        let outcomes = at
            .into_iter()
            .map(|now| {
                let outcome = gcra.check(tat, now);
                tat = outcome.next_tat.unwrap_or(tat);
                outcome
            })
            .collect();
        (outcomes, tat)
    }

    fn run(gcra: &Gcra, at: impl IntoIterator<Item = u64>) -> (Vec<GcraOutcome>, u64) {
        run_from(gcra, 0, at)
    }

    #[test]
    fn a_fresh_key_takes_its_burst_then_one_per_interval() {
        let three_a_minute = gcra(3, 60);
        let (outcomes, _) = run(
            &three_a_minute,
            [1_000; 4].into_iter().chain([20 * NS + 999]),
        );
        let remaining: Vec<_> = outcomes.iter().map(|o| o.remaining).collect();
        assert_eq!(remaining, [2, 1, 0, 0, 0]);
        let allowed: Vec<_> = outcomes.iter().map(GcraOutcome::allowed).collect();
        assert_eq!(allowed, [true, true, true, false, false]);
        assert_eq!(outcomes[3].retry_in, Some(20 * NS), "one every 20 s");
        assert_eq!(outcomes[3].reset_in, 60 * NS, "the whole window");
        assert_eq!(outcomes[4].retry_in, Some(1), "one tick early");
        let (later, _) = run(
            &three_a_minute,
            [1_000; 3].into_iter().chain([20 * NS + 1_000]),
        );
        assert!(later[3].allowed(), "on the tick");
    }

    #[test]
    fn the_interval_is_at_least_one_tick() {
        let fast = gcra(1_000_000_000, 1);
        assert_eq!(fast.interval, 1);
        assert_eq!(
            Gcra::new(
                RateLimitPolicy {
                    limit: 5,
                    window_seconds: 1
                },
                2
            )
            .interval,
            1
        );
        let clamped = Gcra::new(
            RateLimitPolicy {
                limit: 0,
                window_seconds: 1,
            },
            NS,
        );
        assert_eq!(clamped.limit, 1);
    }

    fn policies() -> impl Strategy<Value = Gcra> {
        (1u32..50, 1u32..120).prop_map(|(limit, window)| gcra(limit, window))
    }

    /// Sorted arrival instants, clustered so that bursts and refusals occur.
    fn arrivals() -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec(0u64..200 * NS, 1..200).prop_map(|mut at| {
            at.sort_unstable();
            at
        })
    }

    proptest! {
        /// Never more than the burst plus one per elapsed interval.
        #[test]
        fn lets_through_at_most_the_burst_plus_the_rate(gcra in policies(), at in arrivals()) {
            let (outcomes, _) = run(&gcra, at.iter().copied());
            let first = at[0];
            let mut allowed = 0u64;
            for (now, outcome) in at.iter().zip(&outcomes) {
                allowed += u64::from(outcome.allowed());
                let bound = u64::from(gcra.limit) + (now - first) / gcra.interval;
                prop_assert!(allowed <= bound, "{allowed} let through by {now}, bound {bound}");
            }
        }

        /// `remaining` is exact: that many more at the same instant are let
        /// through, and the next one is not.
        #[test]
        fn remaining_is_what_the_next_requests_get(gcra in policies(), at in arrivals()) {
            let (outcomes, tat) = run(&gcra, at.iter().copied());
            let now = *at.last().unwrap();
            let remaining = outcomes.last().unwrap().remaining;
            let (more, _) = run_from(&gcra, tat, std::iter::repeat_n(now, remaining as usize + 1));
            prop_assert!(more[..remaining as usize].iter().all(GcraOutcome::allowed));
            prop_assert!(!more[remaining as usize].allowed());
        }

        /// A refusal's `retry_in` is exact to the tick, and `reset_in` is
        /// when the full burst is back.
        #[test]
        fn retry_and_reset_are_exact(gcra in policies(), at in arrivals()) {
            let (_, tat) = run(&gcra, at.iter().copied());
            let now = *at.last().unwrap();
            let outcome = gcra.check(tat, now);
            if let Some(retry) = outcome.retry_in {
                prop_assert!(retry >= 1);
                prop_assert!(!gcra.check(tat, now + retry - 1).allowed());
                prop_assert!(gcra.check(tat, now + retry).allowed());
            }
            let tat = outcome.next_tat.unwrap_or(tat);
            let full = gcra.check(tat, now + outcome.reset_in);
            prop_assert_eq!(full.remaining, gcra.limit - 1, "a full burst at the reset");
        }
    }
}
