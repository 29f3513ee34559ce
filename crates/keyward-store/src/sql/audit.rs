//! The audit log: an append-only, hash-chained list of events per account.
//!
//! Each event's `hash` is `SHA-256(prev_hash || canonical(event))`, where
//! `prev_hash` is the hash of the account's previous event (64 zeros for the
//! first) and `canonical` is a fixed JSON form of every stored field. Editing
//! any field of a row breaks its own hash; removing a row breaks the next
//! row's `prev_hash` and leaves a gap in `seq`. [`ChainChecker`] is the one
//! place that recomputes hashes, for [`verify`] and the tests alike.

use super::decode::column;
use super::{PageWindow, ordering};
use crate::error::{StoreError, StoreResult};
use crate::ids::{new_id, now_ms};
use crate::records::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

/// The `prev_hash` of an account's first event.
const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How many events [`verify`] reads per round trip.
const VERIFY_BATCH: i64 = 500;

const EVENT_COLUMNS: &str = "id, account_id, seq, at, actor_member_id, actor_token_id, actor_ip, \
     action, object_type, object_id, before_state, after_state, prev_hash, hash";

/// Appends an event to the account's chain inside the caller's write
/// transaction, so that the event commits or rolls back with the change it
/// records.
///
/// Two writers must not both read the same last event and fork the chain.
/// SQLite runs one write transaction at a time already; on PostgreSQL the
/// account row is locked first (`FOR NO KEY UPDATE`: it queues audit writers
/// of the same account but, unlike `FOR UPDATE`, does not block the key-share
/// locks that inserts referencing the account take — so a transaction that
/// inserted a workspace before appending cannot deadlock with another).
/// `UNIQUE (account_id, seq)` is the backstop: a write that slipped past
/// both would fail rather than commit a fork.
#[allow(clippy::too_many_arguments)] // one argument per event field: a struct would only rename them
pub(crate) async fn append(
    conn: &mut AnyConnection,
    account: &str,
    actor: &Actor,
    action: &str,
    object_type: &str,
    object_id: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> StoreResult<()> {
    if conn.backend_name().eq_ignore_ascii_case("postgresql") {
        sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
            .bind(account)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::not_found("account"))?;
    }
    let last = sqlx::query(
        "SELECT seq, hash FROM audit_events WHERE account_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(account)
    .fetch_optional(&mut *conn)
    .await?;
    let (seq, prev_hash) = match last {
        Some(row) => (column::<i64>(&row, "seq")? + 1, column(&row, "hash")?),
        None => (1, GENESIS_HASH.to_owned()),
    };
    let mut event = AuditEvent {
        id: new_id("evt"),
        account_id: account.to_owned(),
        seq,
        at: now_ms(),
        actor: actor.clone(),
        action: action.to_owned(),
        object_type: object_type.to_owned(),
        object_id: object_id.to_owned(),
        before,
        after,
        prev_hash,
        hash: String::new(),
    };
    event.hash = event_hash(&event);
    sqlx::query(
        "INSERT INTO audit_events (id, account_id, seq, at, actor_member_id, actor_token_id, \
         actor_ip, action, object_type, object_id, before_state, after_state, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&event.id)
    .bind(account)
    .bind(event.seq)
    .bind(event.at)
    .bind(event.actor.member_id.as_deref())
    .bind(event.actor.token_id.as_deref())
    .bind(event.actor.ip.as_deref())
    .bind(&event.action)
    .bind(&event.object_type)
    .bind(&event.object_id)
    .bind(event.before.as_ref().map(Value::to_string))
    .bind(event.after.as_ref().map(Value::to_string))
    .bind(&event.prev_hash)
    .bind(&event.hash)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn list(
    conn: &mut AnyConnection,
    account: &str,
    filter: &AuditFilter,
    order: ListOrder,
    window: PageWindow<'_>,
) -> StoreResult<Page<AuditEvent>> {
    // The cursor is an event id; pages follow the chain order (`seq`),
    // forwards or backwards.
    let (past, direction) = ordering(order);
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM audit_events WHERE account_id = $1 \
         AND ($2 IS NULL OR action = $2) AND ($3 IS NULL OR object_id = $3) \
         AND ($4 IS NULL OR actor_member_id = $4) AND ($5 IS NULL OR at >= $5) \
         AND ($6 IS NULL OR at < $6) \
         AND ($7 IS NULL OR seq {past} (SELECT c.seq FROM audit_events c \
                                   WHERE c.account_id = $1 AND c.id = $7)) \
         ORDER BY seq {direction} LIMIT $8"
    ))
    .bind(account)
    .bind(filter.action.as_deref())
    .bind(filter.object_id.as_deref())
    .bind(filter.actor_member_id.as_deref())
    .bind(filter.from)
    .bind(filter.to)
    .bind(window.after)
    .bind(window.fetch_limit())
    .fetch_all(conn)
    .await?;
    let events = rows
        .iter()
        .map(event_from_row)
        .collect::<StoreResult<_>>()?;
    Ok(window.into_page(events, |e: &AuditEvent| &e.id))
}

/// Walks the account's whole chain in order, a batch at a time, and reports
/// the first event that does not chain.
pub(super) async fn verify(
    conn: &mut AnyConnection,
    account: &str,
    checkpoint: Option<i64>,
) -> StoreResult<AuditChainReport> {
    let mut checker = ChainChecker::new(checkpoint);
    let mut after_seq = 0_i64;
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE account_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3"
        ))
        .bind(account)
        .bind(after_seq)
        .bind(VERIFY_BATCH)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last() else { break };
        after_seq = column(last, "seq")?;
        for row in &rows {
            // A row that does not even decode is a broken link too.
            let checked = match event_from_row(row) {
                Ok(event) => checker.push(&event),
                Err(e) => checker.fail(
                    column(row, "seq").unwrap_or(-1),
                    column(row, "id").unwrap_or_default(),
                    e.to_string(),
                ),
            };
            if !checked {
                return Ok(checker.report(account));
            }
        }
    }
    Ok(checker.report(account))
}

/// Checks events one by one in chain order: each must have the next `seq`,
/// point at the previous event's hash, and carry its own correct hash.
struct ChainChecker {
    expected_seq: i64,
    expected_prev: String,
    events: u64,
    broken: Option<BrokenLink>,
    /// The `seq` to report the link of, and that link once reached.
    checkpoint_seq: Option<i64>,
    checkpoint: Option<ChainLink>,
}

impl ChainChecker {
    fn new(checkpoint_seq: Option<i64>) -> Self {
        Self {
            expected_seq: 1,
            expected_prev: GENESIS_HASH.to_owned(),
            events: 0,
            broken: None,
            checkpoint_seq,
            checkpoint: None,
        }
    }

    /// `false` once the chain is broken (at this event).
    fn push(&mut self, event: &AuditEvent) -> bool {
        let reason = if event.seq != self.expected_seq {
            Some(format!(
                "expected event #{} here, found #{}: an event is missing",
                self.expected_seq, event.seq
            ))
        } else if event.prev_hash != self.expected_prev {
            Some("prev_hash does not match the previous event's hash".to_owned())
        } else if event_hash(event) != event.hash {
            Some("the event's content does not match its hash: it was changed".to_owned())
        } else {
            None
        };
        match reason {
            Some(reason) => self.fail(event.seq, event.id.clone(), reason),
            None => {
                if self.checkpoint_seq == Some(event.seq) {
                    self.checkpoint = Some(ChainLink {
                        seq: event.seq,
                        hash: event.hash.clone(),
                    });
                }
                self.events += 1;
                self.expected_seq += 1;
                self.expected_prev.clone_from(&event.hash);
                true
            }
        }
    }

    fn fail(&mut self, seq: i64, event_id: String, reason: String) -> bool {
        self.events += 1;
        self.broken = Some(BrokenLink {
            seq,
            event_id,
            reason,
        });
        false
    }

    fn report(self, account: &str) -> AuditChainReport {
        // `expected_prev` is the hash of the last event that chained.
        let head = (self.expected_seq > 1).then(|| ChainLink {
            seq: self.expected_seq - 1,
            hash: self.expected_prev,
        });
        AuditChainReport {
            account_id: account.to_owned(),
            events: self.events,
            broken: self.broken,
            head,
            checkpoint: self.checkpoint,
        }
    }
}

/// `SHA-256(prev_hash || canonical(event))`, hex. Covers every stored field
/// except `hash` itself.
fn event_hash(event: &AuditEvent) -> String {
    let fields = [
        Value::from(event.account_id.as_str()),
        Value::from(event.seq),
        Value::from(event.id.as_str()),
        Value::from(event.at),
        Value::from(event.actor.member_id.as_deref()),
        Value::from(event.actor.token_id.as_deref()),
        Value::from(event.actor.ip.as_deref()),
        Value::from(event.action.as_str()),
        Value::from(event.object_type.as_str()),
        Value::from(event.object_id.as_str()),
        event.before.clone().unwrap_or(Value::Null),
        event.after.clone().unwrap_or(Value::Null),
    ];
    let mut canonical = String::new();
    write_canonical(&Value::Array(fields.to_vec()), &mut canonical);
    let mut digest = Sha256::new();
    digest.update(event.prev_hash.as_bytes());
    digest.update(canonical.as_bytes());
    digest
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// JSON with object keys sorted at every depth, so that the form does not
/// depend on how a map happened to be ordered when it was built or read.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// What the audit log keeps of a key: its configuration and status, never
/// its hash (the hint is enough to tell keys apart).
pub(super) fn key_state(key: &ApiKey) -> Value {
    json!({
        "workspace_id": key.workspace_id,
        "environment": key.environment,
        "kind": key.kind.as_str(),
        "name": key.name,
        "hint": key.hint,
        "status": key.status.as_str(),
        "permissions": key.permissions.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "customer_id": key.customer_id,
        "rate_limit": key.rate_limit.map(|p| json!({"limit": p.limit, "window_seconds": p.window_seconds})),
        "allowed_ips": key.allowed_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "allowed_origins": key.allowed_origins,
        "expires_at": key.expires_at,
        "meta": key.meta,
        "credits": key.credits.map(|c| json!({"remaining": c.remaining, "refill": c.refill})),
    })
}

pub(super) fn member_state(member: &Member) -> Value {
    json!({
        "email": member.email,
        "role": member.role.as_str(),
        "permissions": member.permissions.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
    })
}

/// A management token without its hash.
pub(super) fn token_state(token: &ManagementToken) -> Value {
    json!({
        "member_id": token.member_id,
        "name": token.name,
        "hint": token.hint,
        "permissions": token.permissions.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "expires_at": token.expires_at,
    })
}

pub(super) fn allowlist_state(entry: &AllowlistEntry) -> Value {
    json!({
        "cidr": entry.cidr.to_string(),
        "description": entry.description,
        "workspace_ids": entry.workspace_ids,
    })
}

/// The members of two JSON objects whose values differ, as `(before,
/// after)`: an update's audit event shows what it changed, not the whole
/// object twice.
pub(super) fn changed_fields(before: &Value, after: &Value) -> (Value, Value) {
    let (Value::Object(before), Value::Object(after)) = (before, after) else {
        return (before.clone(), after.clone());
    };
    let mut old = serde_json::Map::new();
    let mut new = serde_json::Map::new();
    for (field, value) in after {
        let previous = before.get(field).unwrap_or(&Value::Null);
        if previous != value {
            old.insert(field.clone(), previous.clone());
            new.insert(field.clone(), value.clone());
        }
    }
    (Value::Object(old), Value::Object(new))
}

/// A nullable TEXT column holding JSON.
fn json_or_null(row: &AnyRow, name: &str) -> StoreResult<Option<Value>> {
    let text: Option<String> = column(row, name)?;
    text.map(|text| {
        serde_json::from_str(&text)
            .map_err(|e| StoreError::corrupt(format_args!("column {name}: {e}")))
    })
    .transpose()
}

fn event_from_row(row: &AnyRow) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        id: column(row, "id")?,
        account_id: column(row, "account_id")?,
        seq: column(row, "seq")?,
        at: column(row, "at")?,
        actor: Actor {
            member_id: column(row, "actor_member_id")?,
            token_id: column(row, "actor_token_id")?,
            ip: column(row, "actor_ip")?,
        },
        action: column(row, "action")?,
        object_type: column(row, "object_type")?,
        object_id: column(row, "object_id")?,
        before: json_or_null(row, "before_state")?,
        after: json_or_null(row, "after_state")?,
        prev_hash: column(row, "prev_hash")?,
        hash: column(row, "hash")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store's checker over a chain held in memory.
    fn check_chain<'e>(
        account: &str,
        events: impl IntoIterator<Item = &'e AuditEvent>,
    ) -> AuditChainReport {
        let mut checker = ChainChecker::new(None);
        for event in events {
            if !checker.push(event) {
                break;
            }
        }
        checker.report(account)
    }

    fn event(seq: i64, prev_hash: &str) -> AuditEvent {
        let mut event = AuditEvent {
            id: format!("evt_{seq}"),
            account_id: "acct_1".into(),
            seq,
            at: 1_700_000_000_000 + seq,
            actor: Actor {
                member_id: Some("mem_1".into()),
                token_id: Some("tok_1".into()),
                ip: Some("203.0.113.7".into()),
            },
            action: "key.updated".into(),
            object_type: "key".into(),
            object_id: "key_1".into(),
            before: Some(json!({"name": "a", "meta": {"z": 1, "a": 2}})),
            after: Some(json!({"name": "b"})),
            prev_hash: prev_hash.into(),
            hash: String::new(),
        };
        event.hash = event_hash(&event);
        event
    }

    fn chain(len: i64) -> Vec<AuditEvent> {
        let mut events: Vec<AuditEvent> = Vec::new();
        for seq in 1..=len {
            let prev = events.last().map_or(GENESIS_HASH, |e| e.hash.as_str());
            events.push(event(seq, prev));
        }
        events
    }

    #[test]
    fn an_intact_chain_passes() {
        let report = check_chain("acct_1", &chain(4));
        assert_eq!(report.events, 4);
        assert_eq!(report.broken, None);
    }

    #[test]
    fn hash_does_not_depend_on_key_order() {
        let mut reordered = event(1, GENESIS_HASH);
        reordered.before =
            Some(serde_json::from_str(r#"{"meta":{"a":2,"z":1},"name":"a"}"#).unwrap());
        assert_eq!(event_hash(&reordered), event(1, GENESIS_HASH).hash);
    }

    #[test]
    fn every_field_is_covered() {
        let edits: Vec<fn(&mut AuditEvent)> = vec![
            |e| e.at += 1,
            |e| e.actor.member_id = None,
            |e| e.actor.token_id = Some("tok_2".into()),
            |e| e.actor.ip = None,
            |e| e.action = "key.created".into(),
            |e| e.object_type = "workspace".into(),
            |e| e.object_id = "key_2".into(),
            |e| e.before = None,
            |e| e.after = Some(json!({"name": "c"})),
            |e| e.account_id = "acct_2".into(),
            |e| e.id = "evt_x".into(),
        ];
        for edit in edits {
            let mut events = chain(3);
            edit(&mut events[1]);
            let broken = check_chain("acct_1", &events).broken.expect("detected");
            assert_eq!(broken.seq, 2);
            assert!(broken.reason.contains("changed"), "{}", broken.reason);
        }
    }

    #[test]
    fn a_missing_or_relinked_event_is_named() {
        let mut events = chain(4);
        events.remove(1);
        let report = check_chain("acct_1", &events);
        assert_eq!(report.broken.expect("gap").event_id, "evt_3");

        // Renumbering around the gap does not help: the link is gone.
        let mut events = chain(4);
        events.remove(1);
        events[1].seq = 2;
        let broken = check_chain("acct_1", &events).broken.expect("relinked");
        assert_eq!((broken.seq, broken.event_id.as_str()), (2, "evt_3"));
        assert!(broken.reason.contains("prev_hash"), "{}", broken.reason);
    }
}
