//! Usage credits: the balance of a metered key (`key_credits`, migration
//! 0012). Verification draws on it in batches ([`DrawQueue`]) that lock the
//! balances they draw on for the length of their transaction, which is what
//! keeps concurrent draws — on any number of nodes — from taking more than
//! there is: PostgreSQL locks the rows (`FOR UPDATE`), SQLite has one
//! writer.

use super::decode::{column, narrowed_opt};
use super::{Dialect, Writer, audit, conflict, keys};
use crate::error::{StoreError, StoreResult};
use crate::ids::now_ms;
use crate::records::{Actor, ApiKey, CreditChange, CreditDraw, CreditSetting};
use keyward_core::{CreditRefill, Credits, RefillInterval};
use serde_json::json;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use tokio::sync::Mutex;
use tokio::sync::oneshot::{self, error::TryRecvError};

/// The credit columns [`super::keys`] selects with a key (NULL for an
/// unmetered one), from `key_credits c`; read by [`from_row`].
macro_rules! credit_columns {
    () => {
        "c.remaining AS credits_remaining, c.refill_interval AS credits_refill_interval, \
         c.refill_amount AS credits_refill_amount, c.refill_day AS credits_refill_day, \
         c.refilled_at AS credits_refilled_at"
    };
}
pub(super) use credit_columns;

/// Meters the key from now with this balance and refill, or — `None` —
/// stops metering it.
pub(super) async fn set(
    conn: &mut AnyConnection,
    account: &str,
    key_id: &str,
    setting: Option<CreditSetting>,
    now: i64,
) -> StoreResult<()> {
    let Some(setting) = setting else {
        sqlx::query("DELETE FROM key_credits WHERE account_id = $1 AND key_id = $2")
            .bind(account)
            .bind(key_id)
            .execute(conn)
            .await?;
        return Ok(());
    };
    let refill = setting.refill;
    sqlx::query(
        "INSERT INTO key_credits (key_id, account_id, remaining, refill_interval, refill_amount, \
         refill_day, refilled_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (key_id) DO UPDATE SET remaining = $3, refill_interval = $4, \
         refill_amount = $5, refill_day = $6, refilled_at = $7",
    )
    .bind(key_id)
    .bind(account)
    .bind(stored(setting.remaining))
    .bind(refill.map(|r| r.interval.as_str()))
    .bind(refill.map(|r| stored(r.amount)))
    .bind(refill.and_then(|r| r.day).map(i64::from))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// One request's draw on a key's credits.
pub(super) struct Draw {
    pub account: String,
    pub key_id: String,
    pub cost: u64,
    /// When the request was verified: a refill period begun since the
    /// balance was last refilled refills it first.
    pub at: i64,
}

type DrawResult = StoreResult<Option<CreditDraw>>;
type Waiting = (Draw, oneshot::Sender<DrawResult>);

/// Group commit of credit draws. A draw is a write, and a metered key's
/// balance is one row: drawn one transaction at a time, every draw on a key
/// waits for the previous one's commit, disk sync included (PostgreSQL
/// holds the row lock until then, SQLite has one writer), which held a
/// metered key to about 3,400 requests a second on the development VM
/// whatever the CPU. Instead a draw queues itself and waits for its turn
/// (on SQLite, the store's write gate); whoever gets it runs the draws
/// queued by then (oldest first, at most [`Self::MAX_BATCH`]) in one
/// transaction ([`draw_batch`]) and hands every waiter its result. Draws
/// that queue while a batch runs make up the next one.
///
/// A batch runs in a task of its own, so that it commits and answers all
/// its waiters even when the request that started it goes away. A draw
/// whose caller stopped waiting still runs with its batch (the credit is
/// spent, as when a caller gives up on a slow store).
pub(crate) struct DrawQueue {
    waiting: Arc<std::sync::Mutex<Vec<Waiting>>>,
    writer: Writer,
    /// Whose turn it is to run a batch: the store's write gate on SQLite,
    /// the queue's own on PostgreSQL.
    turn: Arc<Mutex<()>>,
}

impl DrawQueue {
    const MAX_BATCH: usize = 256;

    pub(super) fn new(writer: Writer) -> Self {
        Self {
            waiting: Arc::default(),
            turn: writer.gate.clone().unwrap_or_default(),
            writer,
        }
    }

    /// Runs `draw` in a batch and returns its result.
    pub(super) async fn draw(&self, draw: Draw) -> DrawResult {
        let (reply, mut result) = oneshot::channel();
        queue(&self.waiting).push((draw, reply));
        loop {
            let held = tokio::select! {
                biased;
                done = &mut result => return done.unwrap_or_else(|_| Err(batch_dropped())),
                held = self.turn.clone().lock_owned() => held,
            };
            // A batch that took this draw answered it before it let go of
            // the turn.
            match result.try_recv() {
                Ok(done) => return done,
                Err(TryRecvError::Closed) => return Err(batch_dropped()),
                Err(TryRecvError::Empty) => {}
            }
            let (writer, waiting) = (self.writer.clone(), self.waiting.clone());
            // Joined only to learn that it is over (it answers this draw
            // too); a batch that panicked answers with its channels closed.
            let _ = tokio::spawn(async move {
                // Let go of only once every waiter of the batch is answered.
                let _turn = held;
                let batch: Vec<Waiting> = {
                    let mut waiting = queue(&waiting);
                    let taken = waiting.len().min(Self::MAX_BATCH);
                    waiting.drain(..taken).collect()
                };
                let draws: Vec<&Draw> = batch.iter().map(|(draw, _)| draw).collect();
                let outcome = async {
                    let mut tx = writer.begin_under(None).await?;
                    let results = draw_batch(tx.conn(), writer.dialect, &draws).await?;
                    tx.commit().await?;
                    Ok::<_, StoreError>(results)
                }
                .await;
                answer(batch, outcome);
            })
            .await;
        }
    }
}

fn queue(waiting: &std::sync::Mutex<Vec<Waiting>>) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
    waiting.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Hands each waiter of a batch its result, or the batch's failure.
fn answer(batch: Vec<Waiting>, outcome: StoreResult<Vec<Option<CreditDraw>>>) {
    match outcome {
        Ok(results) => {
            for ((_, reply), done) in batch.into_iter().zip(results) {
                // The caller may have stopped waiting; its credit is spent.
                let _ = reply.send(Ok(done));
            }
        }
        Err(error) => {
            let message = error.to_string();
            for (_, reply) in batch {
                let _ = reply.send(Err(batch_failed(&message)));
            }
        }
    }
}

/// The draws in order, each taking its cost if what is left covers it
/// ([`Credits::draw`]): the balances are read and locked together, in key
/// order (so that batches of several nodes cannot deadlock), drawn on in
/// memory, and written back once per key. A draw on a key that is not
/// metered, or not in the draw's account, is `None`.
async fn draw_batch(
    conn: &mut AnyConnection,
    dialect: Dialect,
    draws: &[&Draw],
) -> StoreResult<Vec<Option<CreditDraw>>> {
    let mut key_ids: Vec<&str> = draws.iter().map(|d| d.key_id.as_str()).collect();
    key_ids.sort_unstable();
    key_ids.dedup();
    let placeholders: Vec<String> = (1..=key_ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        concat!(
            "SELECT c.key_id, c.account_id, ",
            credit_columns!(),
            " FROM key_credits c WHERE c.key_id IN ({placeholders}) ORDER BY c.key_id {lock}"
        ),
        placeholders = placeholders.join(", "),
        lock = dialect.row_lock("FOR UPDATE"),
    );
    let mut query = sqlx::query(&sql);
    for key_id in &key_ids {
        query = query.bind(*key_id);
    }
    let mut balances = HashMap::new();
    for row in query.fetch_all(&mut *conn).await? {
        if let Some(credits) = from_row(&row)? {
            let key_id: String = column(&row, "key_id")?;
            let account: String = column(&row, "account_id")?;
            balances.insert(key_id, (account, credits, credits));
        }
    }
    let results = draws
        .iter()
        .map(|draw| {
            let (account, _, credits) = balances.get_mut(&draw.key_id)?;
            (*account == draw.account).then(|| CreditDraw {
                allowed: credits.draw(draw.cost, draw.at),
                remaining: credits.remaining,
            })
        })
        .collect();
    for (key_id, (account, read, drawn)) in &balances {
        if drawn != read {
            write_balance(conn, account, key_id, drawn).await?;
        }
    }
    Ok(results)
}

/// Every draw of a failed batch fails as the store did.
fn batch_failed(message: &str) -> StoreError {
    StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(message.to_owned())))
}

fn batch_dropped() -> StoreError {
    batch_failed("the batch holding this credit draw was dropped before it committed")
}

/// [`change`], audited as `key.credits_changed`: the key afterwards.
/// NotFound for another account's key, Conflict on `credits` for a key
/// that is not metered.
pub(super) async fn change_audited(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    actor: &Actor,
    key_id: &str,
    credit_change: CreditChange,
) -> StoreResult<ApiKey> {
    let missing = || StoreError::not_found("key");
    keys::find(conn, account, key_id, "")
        .await?
        .ok_or_else(missing)?;
    let (before, after) = change(conn, dialect, account, key_id, credit_change, now_ms())
        .await?
        .ok_or_else(|| {
            conflict(
                "credits",
                "the key is not metered: give it credits by updating the key first",
            )
        })?;
    audit::append(
        conn,
        account,
        actor,
        "key.credits_changed",
        "key",
        key_id,
        Some(json!({"remaining": before})),
        Some(json!({"remaining": after})),
    )
    .await?;
    keys::find(conn, account, key_id, "")
        .await?
        .ok_or_else(missing)
}

/// Adds to or sets a metered key's balance: the balance before and after,
/// or `None` when the key is not metered. A refill due is applied first,
/// so that an addition tops up what the key can use now.
async fn change(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    key_id: &str,
    change: CreditChange,
    now: i64,
) -> StoreResult<Option<(u64, u64)>> {
    // Locked (on PostgreSQL) from the read to the write, so that no
    // verification's draw in between is overwritten.
    let lock = dialect.row_lock("FOR UPDATE");
    let Some(credits) = find(conn, account, key_id, lock).await? else {
        return Ok(None);
    };
    let mut current = credits.as_of(now);
    let before = current.remaining;
    current.remaining = match change {
        CreditChange::Set(balance) => balance,
        CreditChange::Add(delta) => {
            let sum = i128::from(before) + i128::from(delta);
            u64::try_from(sum.clamp(0, i128::from(keyward_core::credits::MAX_CREDITS))).unwrap_or(0)
        }
    };
    write_balance(conn, account, key_id, &current).await?;
    Ok(Some((before, current.remaining)))
}

/// Stores a metered key's balance and when it was last refilled (its
/// refill setting is changed only by [`set`]).
async fn write_balance(
    conn: &mut AnyConnection,
    account: &str,
    key_id: &str,
    credits: &Credits,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE key_credits SET remaining = $3, refilled_at = $4 \
         WHERE account_id = $1 AND key_id = $2",
    )
    .bind(account)
    .bind(key_id)
    .bind(stored(credits.remaining))
    .bind(credits.refilled_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The key's credits; `lock` is a row-lock clause from
/// [`Dialect::row_lock`] or empty.
async fn find(
    conn: &mut AnyConnection,
    account: &str,
    key_id: &str,
    lock: &str,
) -> StoreResult<Option<Credits>> {
    let row = sqlx::query(&format!(
        concat!(
            "SELECT ",
            credit_columns!(),
            " FROM key_credits c WHERE c.account_id = $1 AND c.key_id = $2 {lock}"
        ),
        lock = lock
    ))
    .bind(account)
    .bind(key_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.as_ref().map(from_row).transpose()?.flatten())
}

/// The credits of a row selected with [`credit_columns`]; `None` when unmetered.
pub(super) fn from_row(row: &AnyRow) -> StoreResult<Option<Credits>> {
    let Some(remaining) = narrowed_opt::<u64>(row, "credits_remaining")? else {
        return Ok(None);
    };
    let interval: Option<String> = column(row, "credits_refill_interval")?;
    let refill = match interval {
        None => None,
        Some(interval) => Some(CreditRefill {
            interval: RefillInterval::parse(&interval).ok_or_else(|| {
                StoreError::corrupt(format!("column refill_interval: {interval:?}"))
            })?,
            amount: narrowed_opt(row, "credits_refill_amount")?.ok_or_else(|| {
                StoreError::corrupt("column refill_amount: NULL with an interval")
            })?,
            day: narrowed_opt(row, "credits_refill_day")?,
        }),
    };
    Ok(Some(Credits {
        remaining,
        refill,
        refilled_at: column(row, "credits_refilled_at")?,
    }))
}

/// Amounts are at most `MAX_CREDITS`, checked at the API: they fit.
fn stored(amount: u64) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}
