//! Wall-clock time for the server, and the conversions between the store's
//! Unix milliseconds and the API's RFC 3339 timestamps.

use time::OffsetDateTime;

pub fn now_ms() -> i64 {
    to_ms(OffsetDateTime::now_utc())
}

pub fn to_ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Stored times are always produced by [`to_ms`], so they are in range;
/// the epoch stands in for anything out of range rather than failing a read.
pub fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub fn from_ms_opt(ms: Option<i64>) -> Option<OffsetDateTime> {
    ms.map(from_ms)
}
