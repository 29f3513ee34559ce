//! `keyward audit events`: the account's audit log through the admin API,
//! newest first: who changed what, when and from where. (`keyward audit
//! verify` reads the database itself; it lives with the operator commands.)

use crate::moment::parse_moment;
use crate::output::{json_if_asked, table, text_or};
use crate::remote::ApiArgs;
use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;

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
    fn a_change_reads_as_before_and_after() {
        let (name_a, name_b) = (json!({"name": "a"}), json!({"name": "b"}));
        assert_eq!(change(&name_a, &name_b), r#"{"name":"a"} → {"name":"b"}"#);
        assert_eq!(change(&Value::Null, &name_b), r#"{"name":"b"}"#);
        assert_eq!(change(&name_a, &Value::Null), r#"was {"name":"a"}"#);
        assert_eq!(change(&Value::Null, &Value::Null), "");
    }
}
