//! Usage credits: the balance of a metered key (`key_credits`, migration
//! 0012). Verification draws on it with one conditional UPDATE, which is
//! what keeps concurrent draws — on any number of nodes — from taking more
//! than there is: PostgreSQL re-checks the condition on the row it locked,
//! and SQLite has one writer (where [`DrawQueue`] commits draws in batches).

use super::decode::{column, narrowed_opt};
use super::{Dialect, SqlStore, audit, conflict, keys};
use crate::error::{StoreError, StoreResult};
use crate::ids::now_ms;
use crate::records::{Actor, ApiKey, CreditChange, CreditDraw, CreditSetting};
use keyward_core::{CreditRefill, Credits, RefillInterval};
use serde_json::json;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use std::sync::PoisonError;
use tokio::sync::oneshot::{self, error::TryRecvError};
use tokio::sync::{Mutex, MutexGuard};

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
    /// When the key's current refill period began, from the refill the
    /// caller knows; the draw refills first when the balance was last
    /// refilled before it.
    pub period_start: Option<i64>,
}

impl Draw {
    /// Takes `cost` from the key's balance if it holds at least that much
    /// (and more than nothing, so that a cost of 0 still asks "anything
    /// left?"). `None` when the key is not metered.
    pub(super) async fn run(&self, conn: &mut AnyConnection) -> StoreResult<Option<CreditDraw>> {
        // `due` in SQL: a refill period began since the last refill.
        const BALANCE: &str = "(CASE WHEN $3 > refilled_at AND refill_amount IS NOT NULL \
             THEN refill_amount ELSE remaining END)";
        let taken: Option<i64> = sqlx::query_scalar(&format!(
            "UPDATE key_credits SET remaining = {BALANCE} - $4, \
             refilled_at = CASE WHEN $3 > refilled_at AND refill_amount IS NOT NULL \
             THEN $3 ELSE refilled_at END \
             WHERE account_id = $1 AND key_id = $2 AND {BALANCE} >= $5 RETURNING remaining"
        ))
        .bind(&self.account)
        .bind(&self.key_id)
        .bind(self.period_start)
        .bind(stored(self.cost))
        .bind(stored(self.cost.max(1)))
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(remaining) = taken {
            return Ok(Some(CreditDraw {
                allowed: true,
                remaining: unsigned(remaining),
            }));
        }
        // Refused, or not metered: what is there (read after the refusal, so
        // possibly a concurrent change's balance; it is only reported).
        let found = find(conn, &self.account, &self.key_id, "").await?;
        Ok(found.map(|credits| CreditDraw {
            allowed: false,
            remaining: match (self.period_start, credits.refill) {
                (Some(start), Some(refill)) if start > credits.refilled_at => refill.amount,
                _ => credits.remaining,
            },
        }))
    }
}

type DrawResult = StoreResult<Option<CreditDraw>>;

/// Group commit of credit draws on SQLite. SQLite commits one transaction
/// at a time, each with a sync of its log to disk, so one transaction per
/// draw held every metered key of a node to one disk sync per request
/// (about 3,400 a second on the development VM, whatever the CPU). Instead
/// a draw queues itself and waits for the write gate; whoever gets the gate
/// runs the draws queued by then (oldest first, at most [`Self::MAX_BATCH`])
/// in one transaction, each its own conditional UPDATE — as exact as alone
/// — and hands every waiter its result. Draws that queue while a batch runs
/// make up the next one.
///
/// A draw whose caller stopped waiting still runs with its batch (the credit
/// is spent, as when a caller gives up on a slow store); a batch whose
/// runner is dropped before it commits rolls back, and its draws fail.
#[derive(Default)]
pub(crate) struct DrawQueue {
    waiting: std::sync::Mutex<Vec<(Draw, oneshot::Sender<DrawResult>)>>,
}

impl DrawQueue {
    const MAX_BATCH: usize = 256;

    /// Runs `draw` in a batch under `gate` (the store's write gate) and
    /// returns its result.
    pub(super) async fn draw(&self, store: &SqlStore, gate: &Mutex<()>, draw: Draw) -> DrawResult {
        let (reply, mut result) = oneshot::channel();
        self.queue().push((draw, reply));
        loop {
            let held = tokio::select! {
                biased;
                done = &mut result => return done.unwrap_or_else(|_| Err(batch_dropped())),
                held = gate.lock() => held,
            };
            // A batch that took this draw answered it before it let go of
            // the gate (or was dropped, closing the channel).
            match result.try_recv() {
                Ok(done) => return done,
                Err(TryRecvError::Closed) => return Err(batch_dropped()),
                Err(TryRecvError::Empty) => {}
            }
            let batch: Vec<_> = {
                let mut waiting = self.queue();
                let taken = waiting.len().min(Self::MAX_BATCH);
                waiting.drain(..taken).collect()
            };
            match run_batch(store, held, &batch).await {
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
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<(Draw, oneshot::Sender<DrawResult>)>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The draws of `batch` in one write transaction, under the gate `held`.
async fn run_batch(
    store: &SqlStore,
    held: MutexGuard<'_, ()>,
    batch: &[(Draw, oneshot::Sender<DrawResult>)],
) -> StoreResult<Vec<Option<CreditDraw>>> {
    let mut tx = store.begin_write_under(Some(held)).await?;
    let mut results = Vec::with_capacity(batch.len());
    for (draw, _) in batch {
        results.push(draw.run(tx.conn()).await?);
    }
    tx.commit().await?;
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
    let current = credits.as_of(now);
    let before = current.remaining;
    let after = match change {
        CreditChange::Set(balance) => balance,
        CreditChange::Add(delta) => {
            let sum = i128::from(before) + i128::from(delta);
            u64::try_from(sum.clamp(0, i128::from(keyward_core::credits::MAX_CREDITS))).unwrap_or(0)
        }
    };
    sqlx::query(
        "UPDATE key_credits SET remaining = $3, refilled_at = $4 \
         WHERE account_id = $1 AND key_id = $2",
    )
    .bind(account)
    .bind(key_id)
    .bind(stored(after))
    .bind(current.refilled_at)
    .execute(conn)
    .await?;
    Ok(Some((before, after)))
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

fn unsigned(amount: i64) -> u64 {
    u64::try_from(amount).unwrap_or(0)
}
