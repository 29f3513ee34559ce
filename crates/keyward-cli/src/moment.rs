//! Moments typed on the command line: a time ago (`90m`, `7d`) or an RFC
//! 3339 time, as the API's `from` / `to` parameters take them.

use keyward_core::parse_duration_seconds;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A moment as the API takes it: RFC 3339 as given, or `now - duration`.
pub fn parse_moment(text: &str) -> Result<String, String> {
    if OffsetDateTime::parse(text, &Rfc3339).is_ok() {
        return Ok(text.to_owned());
    }
    let seconds = parse_duration_seconds(text).map_err(|_| {
        format!("{text:?} is neither a time ago (`90m`, `7d`) nor an RFC 3339 time")
    })?;
    let ago = i64::try_from(seconds)
        .ok()
        .and_then(|s| OffsetDateTime::now_utc().checked_sub(time::Duration::seconds(s)))
        .ok_or_else(|| format!("{text:?} reaches back too far"))?;
    ago.format(&Rfc3339).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_times_or_durations_ago() {
        assert_eq!(
            parse_moment("2026-01-31T12:00:00Z").unwrap(),
            "2026-01-31T12:00:00Z"
        );
        let hour_ago = OffsetDateTime::parse(&parse_moment("1h").unwrap(), &Rfc3339).unwrap();
        let minutes = (OffsetDateTime::now_utc() - hour_ago).whole_minutes();
        assert!((59..=61).contains(&minutes), "{minutes}");
        for bad in ["yesterday", "", "-1h", "2026-01-31"] {
            assert!(parse_moment(bad).is_err(), "{bad:?}");
        }
    }
}
