//! `keyward audit events`: the account's audit log through the admin API,
//! newest first: who changed what, when and from where. (`keyward audit
//! verify` reads the database itself; it lives with the operator commands.)

use crate::output::{json_if_asked, table, text_or};
use crate::remote::ApiArgs;
use anyhow::{Context, Result};
use clap::Args;
use keyward_core::parse_duration_seconds;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Args)]
pub struct EventsArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Only this action, e.g. `key.revoked` or `member.updated`.
    #[arg(long)]
    action: Option<String>,
    /// Only events about this object (`key_…`, `ws_…`, `mem_…`…).
    #[arg(long)]
    object: Option<String>,
    /// Only what this member did (`mem_…`).
    #[arg(long)]
    actor: Option<String>,
    /// Only events since then: a time ago (`90m`, `7d`) or an RFC 3339 time.
    #[arg(long, value_parser = parse_moment)]
    since: Option<String>,
    /// Only events before then: a time ago or an RFC 3339 time.
    #[arg(long, value_parser = parse_moment)]
    until: Option<String>,
    /// At most this many events.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Start from the account's first event (the hash chain's order)
    /// instead of its latest.
    #[arg(long)]
    oldest_first: bool,
}

/// A moment as the API takes it: RFC 3339 as given, or `now - duration`.
fn parse_moment(text: &str) -> Result<String, String> {
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

pub async fn events(args: EventsArgs) -> Result<()> {
    let api = args.api.client()?;
    let mut url = api.url(&["audit-events"])?;
    {
        let mut query = url.query_pairs_mut();
        let order = if args.oldest_first { "asc" } else { "desc" };
        query.append_pair("order", order);
        let filters = [
            ("action", &args.action),
            ("object_id", &args.object),
            ("actor", &args.actor),
            ("from", &args.since),
            ("to", &args.until),
        ];
        for (name, value) in filters {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
    }
    let events = api
        .list(url, args.limit)
        .await
        .context("reading the audit log (it takes the manage_members permission)")?;
    if json_if_asked(args.api.json, &Value::Array(events.clone())) {
        return Ok(());
    }
    if events.is_empty() {
        println!("No audit events match.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = events.iter().map(event_row).collect();
    let headers = ["SEQ", "AT", "ACTION", "OBJECT", "ACTOR", "FROM", "CHANGE"];
    println!("{}", table(&headers, &rows));
    Ok(())
}

fn event_row(event: &Value) -> Vec<String> {
    let actor = &event["actor"];
    let who = match (actor["member_id"].as_str(), actor["token_id"].as_str()) {
        (Some(member), Some(token)) => format!("{member} (token {token})"),
        (Some(member), None) => member.to_owned(),
        (None, Some(token)) => format!("token {token}"),
        (None, None) => "keyward".to_owned(),
    };
    vec![
        event["seq"].to_string(),
        text_or(&event["at"], ""),
        text_or(&event["action"], ""),
        text_or(&event["object_id"], ""),
        who,
        text_or(&actor["ip"], "-"),
        change(&event["before"], &event["after"]),
    ]
}

/// What the event changed, as compact JSON: `before → after`.
fn change(before: &Value, after: &Value) -> String {
    match (before, after) {
        (Value::Null, Value::Null) => String::new(),
        (Value::Null, after) => after.to_string(),
        (before, Value::Null) => format!("was {before}"),
        (before, after) => format!("{before} → {after}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn a_change_reads_as_before_and_after() {
        let (name_a, name_b) = (json!({"name": "a"}), json!({"name": "b"}));
        assert_eq!(change(&name_a, &name_b), r#"{"name":"a"} → {"name":"b"}"#);
        assert_eq!(change(&Value::Null, &name_b), r#"{"name":"b"}"#);
        assert_eq!(change(&name_a, &Value::Null), r#"was {"name":"a"}"#);
        assert_eq!(change(&Value::Null, &Value::Null), "");
    }
}
