//! Usage credits (SPEC §8): a balance on a key that each valid verification
//! draws on, optionally refilled every day or month. The balance itself
//! lives in the store, which takes from it atomically; this module holds
//! the rules that need no storage: bounds, the refill calendar, and what a
//! stored balance amounts to at a given time.
//!
//! Refills are lazy: nothing runs at midnight. A balance last refilled
//! before the current period's start counts as refilled, and the store's
//! next draw writes that down in the same statement that takes from it.

use crate::model::InvalidValue;
use serde::{Deserialize, Serialize};
use std::fmt;
use time::{Month, OffsetDateTime};

/// The largest balance, refill or cost: far past any real quota, and
/// small enough that no sum of two overflows the store's 64-bit integers.
pub const MAX_CREDITS: u64 = 1_000_000_000_000_000;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefillInterval {
    /// At 00:00 UTC every day.
    Daily,
    /// At 00:00 UTC on the refill's `day` of every month.
    Monthly,
}

impl RefillInterval {
    pub fn as_str(self) -> &'static str {
        match self {
            RefillInterval::Daily => "daily",
            RefillInterval::Monthly => "monthly",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "daily" => Some(RefillInterval::Daily),
            "monthly" => Some(RefillInterval::Monthly),
            _ => None,
        }
    }
}

/// How a balance comes back: set to `amount` at the start of every period.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditRefill {
    pub interval: RefillInterval,
    pub amount: u64,
    /// Monthly refills only: the day of the month, 1–31 (default 1). A
    /// month without that day refills on its last day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<u8>,
}

impl CreditRefill {
    /// Checks the bounds; the error names the sub-field at fault.
    pub fn validate(&self) -> Result<(), (&'static str, InvalidValue)> {
        check_amount(self.amount).map_err(|e| ("amount", e))?;
        match (self.interval, self.day) {
            (RefillInterval::Daily, Some(_)) => {
                Err(("day", InvalidValue::new("only monthly refills take a day")))
            }
            (RefillInterval::Monthly, Some(day)) if !(1..=31).contains(&day) => Err((
                "day",
                InvalidValue::new("must be a day of the month, 1 to 31"),
            )),
            _ => Ok(()),
        }
    }

    /// When the refill period holding `now_ms` began, in Unix ms: the last
    /// 00:00 UTC for a daily refill, the last refill day's for a monthly
    /// one. `i64::MIN` (never refilled) for a time the calendar cannot hold.
    pub fn period_start_ms(&self, now_ms: i64) -> i64 {
        self.period_start(now_ms).unwrap_or(i64::MIN)
    }

    /// When the period after the one holding `now_ms` begins: the next
    /// refill, in Unix ms.
    pub fn next_period_start_ms(&self, now_ms: i64) -> i64 {
        let start = self.period_start_ms(now_ms);
        // A day past the start is the next day; 31 days past a monthly
        // refill is at or after the next month's, and before the one after.
        let step = match self.interval {
            RefillInterval::Daily => DAY_MS,
            RefillInterval::Monthly => 31 * DAY_MS,
        };
        self.period_start_ms(start.saturating_add(step))
    }

    fn period_start(&self, now_ms: i64) -> Option<i64> {
        let today = OffsetDateTime::from_unix_timestamp(now_ms.div_euclid(1000))
            .ok()?
            .date();
        let start = match self.interval {
            RefillInterval::Daily => today,
            RefillInterval::Monthly => {
                let day = self.day.unwrap_or(1);
                let this_month = refill_date(today.year(), today.month(), day)?;
                if this_month <= today {
                    this_month
                } else {
                    let month = today.month().previous();
                    let year = today.year() - i32::from(month == Month::December);
                    refill_date(year, month, day)?
                }
            }
        };
        Some(start.midnight().assume_utc().unix_timestamp() * 1000)
    }
}

const DAY_MS: i64 = 86_400_000;

/// The month's `day`, or its last day when it is shorter.
fn refill_date(year: i32, month: Month, day: u8) -> Option<time::Date> {
    time::Date::from_calendar_date(year, month, day.min(month.length(year))).ok()
}

/// `daily:AMOUNT`, `monthly:AMOUNT` or `monthly:AMOUNT@DAY`: the CLI's
/// notation, read back from `Display`.
impl std::str::FromStr for CreditRefill {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let shape = || {
            InvalidValue::new(
                "must be daily:AMOUNT or monthly:AMOUNT[@DAY], such as monthly:1000@15",
            )
        };
        let (interval, rest) = s.split_once(':').ok_or_else(shape)?;
        let interval = RefillInterval::parse(interval).ok_or_else(shape)?;
        let (amount, day) = match rest.split_once('@') {
            Some((amount, day)) => (amount, Some(day.parse().map_err(|_| shape())?)),
            None => (rest, None),
        };
        let refill = CreditRefill {
            interval,
            amount: amount.parse().map_err(|_| shape())?,
            day,
        };
        refill
            .validate()
            .map_err(|(field, e)| InvalidValue::new(format!("{field} {}", e.message)))?;
        Ok(refill)
    }
}

impl fmt::Display for CreditRefill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.interval.as_str(), self.amount)?;
        match self.day {
            Some(day) => write!(f, "@{day}"),
            None => Ok(()),
        }
    }
}

/// A key's credits as stored: the balance after the last draw or change,
/// and when it was last refilled (or set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credits {
    pub remaining: u64,
    pub refill: Option<CreditRefill>,
    pub refilled_at: i64,
}

impl Credits {
    /// The credits at `now_ms`: as stored, or refilled at the start of the
    /// current period when it began after the last refill.
    pub fn as_of(self, now_ms: i64) -> Credits {
        match self.refill {
            Some(refill) if refill.period_start_ms(now_ms) > self.refilled_at => Credits {
                remaining: refill.amount,
                refilled_at: refill.period_start_ms(now_ms),
                ..self
            },
            _ => self,
        }
    }

    /// Takes `cost` at `now_ms` (refilling first when a period began since
    /// the last refill) if the balance covers it and holds anything at
    /// all, so that a cost of 0 asks "anything left?". Whether it did;
    /// `self` is the balance afterwards either way.
    pub fn draw(&mut self, cost: u64, now_ms: i64) -> bool {
        *self = self.as_of(now_ms);
        let allowed = self.remaining >= cost.max(1);
        if allowed {
            self.remaining -= cost;
        }
        allowed
    }
}

/// A balance, refill amount or cost within bounds.
pub fn check_amount(amount: u64) -> Result<(), InvalidValue> {
    if amount > MAX_CREDITS {
        return Err(InvalidValue::new(format!("must be at most {MAX_CREDITS}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn ms(at: OffsetDateTime) -> i64 {
        at.unix_timestamp() * 1000
    }

    fn monthly(day: Option<u8>) -> CreditRefill {
        CreditRefill {
            interval: RefillInterval::Monthly,
            amount: 10,
            day,
        }
    }

    #[test]
    fn a_monthly_refill_on_a_day_a_month_lacks_happens_on_its_last_day() {
        let on_31 = monthly(Some(31));
        assert_eq!(
            on_31.period_start_ms(ms(datetime!(2026-03-05 12:00 UTC))),
            ms(datetime!(2026-02-28 00:00 UTC))
        );
        assert_eq!(
            on_31.period_start_ms(ms(datetime!(2028-02-29 00:00 UTC))),
            ms(datetime!(2028-02-29 00:00 UTC)),
            "leap year"
        );
        assert_eq!(
            monthly(Some(15)).period_start_ms(ms(datetime!(2026-01-10 08:00 UTC))),
            ms(datetime!(2025-12-15 00:00 UTC)),
            "before this month's day: last month's, across the year"
        );
        assert_eq!(
            monthly(None).period_start_ms(ms(datetime!(2026-11-30 23:59:59 UTC))),
            ms(datetime!(2026-11-01 00:00 UTC))
        );
    }

    #[test]
    fn a_balance_counts_as_refilled_once_a_new_period_begins() {
        let refill = CreditRefill {
            interval: RefillInterval::Daily,
            amount: 100,
            day: None,
        };
        let written = ms(datetime!(2026-11-30 10:00 UTC));
        let credits = Credits {
            remaining: 3,
            refill: Some(refill),
            refilled_at: written,
        };
        assert_eq!(credits.as_of(written + 13 * 3_600_000), credits, "same day");
        let next_day = credits.as_of(written + 14 * 3_600_000);
        assert_eq!(next_day.remaining, 100);
        assert_eq!(next_day.refilled_at, ms(datetime!(2026-12-01 00:00 UTC)));
        let no_refill = Credits {
            refill: None,
            ..credits
        };
        assert_eq!(no_refill.as_of(written + 90 * DAY_MS), no_refill);
    }

    #[test]
    fn refills_are_checked_field_by_field() {
        let bad = [
            ("daily:10@3", "day"),
            ("monthly:10@0", "day"),
            ("monthly:10@32", "day"),
            ("monthly:1000000000000000000", "amount"),
        ];
        for (notation, field) in bad {
            let err = notation.parse::<CreditRefill>().unwrap_err();
            assert!(
                err.message.starts_with(field),
                "{notation}: {}",
                err.message
            );
        }
        for shape in ["weekly:10", "daily", "daily:-1", "monthly:10@x", ""] {
            assert!(shape.parse::<CreditRefill>().is_err(), "{shape:?} accepted");
        }
    }

    fn any_refill() -> impl Strategy<Value = CreditRefill> {
        prop_oneof![
            (0..=MAX_CREDITS).prop_map(|amount| CreditRefill {
                interval: RefillInterval::Daily,
                amount,
                day: None,
            }),
            (0..=MAX_CREDITS, proptest::option::of(1u8..=31)).prop_map(|(amount, day)| {
                CreditRefill {
                    interval: RefillInterval::Monthly,
                    amount,
                    day,
                }
            }),
        ]
    }

    /// Between 1970 and 2200, in ms.
    fn any_time() -> impl Strategy<Value = i64> {
        0i64..7_258_118_400_000
    }

    proptest! {
        #[test]
        fn the_notation_reads_back_what_it_prints(refill in any_refill()) {
            prop_assert_eq!(refill.to_string().parse::<CreditRefill>().unwrap(), refill);
        }

        /// The period holding `now` starts at a midnight at or before it, no
        /// more than a day (a month) before, and the next period starts
        /// after `now`.
        #[test]
        fn a_period_starts_at_the_last_midnight_of_its_calendar(
            refill in any_refill(),
            now in any_time(),
        ) {
            let start = refill.period_start_ms(now);
            prop_assert!(start <= now);
            prop_assert_eq!(refill.period_start_ms(start), start, "a period starts on its own boundary");
            prop_assert_eq!(start.rem_euclid(DAY_MS), 0);
            let longest = match refill.interval {
                RefillInterval::Daily => DAY_MS,
                RefillInterval::Monthly => 31 * DAY_MS,
            };
            prop_assert!(now - start < longest);
            let next = refill.next_period_start_ms(now);
            prop_assert!(next > now);
            prop_assert!(next - start <= longest);
            prop_assert_eq!(refill.period_start_ms(next), next, "the next period starts at its boundary");
            prop_assert_eq!(refill.period_start_ms(next - 1), start, "no boundary between");
        }

        /// Draws in order at one moment: each passes exactly when what is
        /// left (refilled first if due) covers it and is above zero, and
        /// together they never take more than that balance.
        #[test]
        fn draws_never_take_more_than_the_balance(
            remaining in 0..=1_000u64,
            refill in proptest::option::of(any_refill()),
            refilled_at in any_time(),
            now in any_time(),
            costs in proptest::collection::vec(0..=300u64, 0..20),
        ) {
            let mut credits = Credits { remaining, refill, refilled_at };
            let start = credits.as_of(now).remaining;
            let mut taken = 0;
            for &cost in &costs {
                let before = credits.as_of(now).remaining;
                let allowed = credits.draw(cost, now);
                prop_assert_eq!(allowed, before >= cost.max(1));
                prop_assert_eq!(credits.remaining, if allowed { before - cost } else { before });
                taken += if allowed { cost } else { 0 };
            }
            prop_assert_eq!(start - taken, credits.as_of(now).remaining);
            if !costs.is_empty() {
                prop_assert_eq!(credits.as_of(now), credits, "a draw refills when due, once");
            }
        }
    }
}
