//! Background jobs: a durable queue in the store, so that work survives a
//! restart. A running job's worker writes a heartbeat; a job whose heartbeat
//! stops (the process died) is queued again, or failed after too many tries
//! — never lost silently.

use super::decode::{column, json, narrowed, narrowed_opt, parsed, to_json};
use super::{Dialect, PageWindow, audit, keys, lifecycle, ordering};
use crate::error::{StoreError, StoreResult};
use crate::ids::new_id;
use crate::records::*;
use keyward_core::KeyStatus;
use serde_json::json;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

const SELECT: &str = "SELECT id, account_id, kind, params, status, progress_done, progress_total, \
     result, error, attempts, created_by, created_at, started_at, heartbeat_at, finished_at FROM jobs";

/// How many times an interrupted job is retried before it is failed.
pub const MAX_ATTEMPTS: u32 = 3;

fn from_row(row: &AnyRow) -> StoreResult<Job> {
    let result: Option<String> = column(row, "result")?;
    Ok(Job {
        id: column(row, "id")?,
        account_id: column(row, "account_id")?,
        kind: column(row, "kind")?,
        params: json(row, "params")?,
        status: parsed(row, "status", JobStatus::parse)?,
        progress_done: narrowed(row, "progress_done")?,
        progress_total: narrowed_opt(row, "progress_total")?,
        result: result
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| StoreError::corrupt(format_args!("column result: {e}")))?,
        error: column(row, "error")?,
        attempts: narrowed(row, "attempts")?,
        created_by: column(row, "created_by")?,
        created_at: column(row, "created_at")?,
        started_at: column(row, "started_at")?,
        heartbeat_at: column(row, "heartbeat_at")?,
        finished_at: column(row, "finished_at")?,
    })
}

pub(super) async fn enqueue(
    conn: &mut AnyConnection,
    account: Option<&str>,
    actor: &Actor,
    new: NewJob,
    now: i64,
) -> StoreResult<Job> {
    let id = new_id("job");
    sqlx::query(
        "INSERT INTO jobs (id, account_id, kind, params, status, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(account)
    .bind(&new.kind)
    .bind(to_json(&new.params, "params")?)
    .bind(JobStatus::Queued.as_str())
    .bind(&new.created_by)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if let Some(account) = account {
        let after = json!({"kind": new.kind, "params": new.params});
        audit::append(
            conn,
            account,
            actor,
            "job.created",
            "job",
            &id,
            None,
            Some(after),
        )
        .await?;
    }
    find_any(conn, &id).await
}

pub(super) async fn list(
    conn: &mut AnyConnection,
    account: &str,
    order: ListOrder,
    window: PageWindow<'_>,
) -> StoreResult<Page<Job>> {
    // Ids are ULIDs: their order is the order jobs were started in.
    let (past, direction) = ordering(order);
    let rows = sqlx::query(&format!(
        "{SELECT} WHERE account_id = $1 AND ($2 IS NULL OR id {past} $2) \
         ORDER BY id {direction} LIMIT $3"
    ))
    .bind(account)
    .bind(window.after)
    .bind(window.fetch_limit())
    .fetch_all(conn)
    .await?;
    let jobs = rows.iter().map(from_row).collect::<StoreResult<_>>()?;
    Ok(window.into_page(jobs, |j: &Job| &j.id))
}

pub(super) async fn find(conn: &mut AnyConnection, account: &str, id: &str) -> StoreResult<Job> {
    let row = sqlx::query(&format!("{SELECT} WHERE account_id = $1 AND id = $2"))
        .bind(account)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| StoreError::not_found("job"))
}

/// Any job, for the worker (which serves every account).
async fn find_any(conn: &mut AnyConnection, id: &str) -> StoreResult<Job> {
    let row = sqlx::query(&format!("{SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| StoreError::not_found("job"))
}

/// Takes the oldest queued job, if any. `SKIP LOCKED` lets several nodes'
/// workers claim different jobs on PostgreSQL; SQLite has one writer.
pub(super) async fn claim(
    conn: &mut AnyConnection,
    dialect: Dialect,
    now: i64,
) -> StoreResult<Option<Job>> {
    let next: Option<String> = sqlx::query_scalar(&format!(
        "SELECT id FROM jobs WHERE status = $1 ORDER BY id LIMIT 1 {}",
        dialect.row_lock("FOR UPDATE SKIP LOCKED")
    ))
    .bind(JobStatus::Queued.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = next else {
        return Ok(None);
    };
    sqlx::query(
        "UPDATE jobs SET status = $2, attempts = attempts + 1, started_at = COALESCE(started_at, $3), \
         heartbeat_at = $3 WHERE id = $1",
    )
    .bind(&id)
    .bind(JobStatus::Running.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    find_any(conn, &id).await.map(Some)
}

/// Records progress; doubles as the heartbeat that proves the worker lives.
pub(super) async fn progress(
    conn: &mut AnyConnection,
    id: &str,
    done: u64,
    total: Option<u64>,
    now: i64,
) -> StoreResult<()> {
    let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    sqlx::query(
        "UPDATE jobs SET progress_done = $2, progress_total = $3, heartbeat_at = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(as_i64(done))
    .bind(total.map(as_i64))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn finish(
    conn: &mut AnyConnection,
    id: &str,
    outcome: JobOutcome,
    now: i64,
) -> StoreResult<()> {
    let (status, result, error) = match outcome {
        JobOutcome::Succeeded(result) => (
            JobStatus::Succeeded,
            Some(to_json(&result, "result")?),
            None,
        ),
        JobOutcome::Failed(error) => (JobStatus::Failed, None, Some(error)),
    };
    sqlx::query("UPDATE jobs SET status = $2, result = $3, error = $4, finished_at = $5, heartbeat_at = $5 WHERE id = $1")
        .bind(id)
        .bind(status.as_str())
        .bind(result)
        .bind(error)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Recovers jobs whose worker stopped beating before `stale_before`: they
/// are queued again, or failed once they have had [`MAX_ATTEMPTS`].
/// Returns how many were recovered.
pub(super) async fn recover_stale(
    conn: &mut AnyConnection,
    stale_before: i64,
    now: i64,
) -> StoreResult<u64> {
    let failed = sqlx::query(
        "UPDATE jobs SET status = $1, error = $2, finished_at = $3 \
         WHERE status = $4 AND heartbeat_at < $5 AND attempts >= $6",
    )
    .bind(JobStatus::Failed.as_str())
    .bind("interrupted too many times: the worker stopped while running it")
    .bind(now)
    .bind(JobStatus::Running.as_str())
    .bind(stale_before)
    .bind(i64::from(MAX_ATTEMPTS))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let requeued =
        sqlx::query("UPDATE jobs SET status = $1 WHERE status = $2 AND heartbeat_at < $3")
            .bind(JobStatus::Queued.as_str())
            .bind(JobStatus::Running.as_str())
            .bind(stale_before)
            .execute(conn)
            .await?
            .rows_affected();
    Ok(failed + requeued)
}

/// Whether a job of this kind is queued or running (the scheduler does not
/// pile up sweeps).
pub(super) async fn pending_of_kind(conn: &mut AnyConnection, kind: &str) -> StoreResult<bool> {
    let count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE kind = $1 AND status IN ($2, $3)")
            .bind(kind)
            .bind(JobStatus::Queued.as_str())
            .bind(JobStatus::Running.as_str())
            .fetch_one(conn)
            .await?;
    Ok(count > 0)
}

const SECRET_SELECT: &str = "SELECT job_id, key_id, key_name, hint, ciphertext, \
     old_secret_expires_at, created_at FROM job_secrets";

fn secret_from_row(row: &AnyRow) -> StoreResult<JobSecret> {
    Ok(JobSecret {
        job_id: column(row, "job_id")?,
        key_id: column(row, "key_id")?,
        key_name: column(row, "key_name")?,
        hint: column(row, "hint")?,
        ciphertext: column(row, "ciphertext")?,
        old_secret_expires_at: column(row, "old_secret_expires_at")?,
        created_at: column(row, "created_at")?,
    })
}

async fn recorded_secret(
    conn: &mut AnyConnection,
    account: &str,
    job_id: &str,
    key_id: &str,
) -> StoreResult<Option<JobSecret>> {
    let row = sqlx::query(&format!(
        "{SECRET_SELECT} WHERE account_id = $1 AND job_id = $2 AND key_id = $3"
    ))
    .bind(account)
    .bind(job_id)
    .bind(key_id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(secret_from_row).transpose()
}

async fn ensure_job(conn: &mut AnyConnection, account: &str, job_id: &str) -> StoreResult<()> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE account_id = $1 AND id = $2")
            .bind(account)
            .bind(job_id)
            .fetch_optional(conn)
            .await?;
    found.map(drop).ok_or_else(|| StoreError::not_found("job"))
}

/// One key of a bulk rotation: rotated and recorded under the job in the
/// caller's transaction, unless the job recorded it before (see
/// `Store::rotate_key_for_job`). The record is looked up with the key's row
/// locked, so two workers racing on one job cannot both rotate it; the
/// primary key on `(job_id, key_id)` backs that up.
pub(super) async fn rotate_for_job(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    actor: &Actor,
    rotation: JobKeyReplacement,
    now: i64,
) -> StoreResult<JobRotation> {
    let JobKeyReplacement {
        job_id,
        replacement,
        ciphertext,
    } = rotation;
    ensure_job(conn, account, &job_id).await?;
    let key = keys::find(
        conn,
        account,
        &replacement.key_id,
        dialect.row_lock("FOR UPDATE OF k"),
    )
    .await?;
    if let Some(done) = recorded_secret(conn, account, &job_id, &replacement.key_id).await? {
        return Ok(JobRotation::AlreadyRotated(done));
    }
    let key = key.ok_or_else(|| StoreError::not_found("key"))?;
    let refusal = match key.status {
        KeyStatus::Revoked => Some("the key is revoked; revoked keys are not rotated"),
        KeyStatus::Expired => Some("the key has expired; expired keys are not rotated"),
        _ if key.expires_at.is_some_and(|at| at <= now) => {
            Some("the key has expired; expired keys are not rotated")
        }
        _ => None,
    };
    if let Some(message) = refusal {
        return Err(StoreError::Conflict {
            field: "status",
            message: message.into(),
        });
    }
    let (rotated, grace_until) =
        lifecycle::replace_secret(conn, account, actor, &key, replacement, Some(&job_id), now)
            .await?;
    let record = JobSecret {
        job_id,
        key_id: rotated.id,
        key_name: rotated.name,
        hint: rotated.hint,
        ciphertext,
        old_secret_expires_at: grace_until,
        created_at: now,
    };
    sqlx::query(
        "INSERT INTO job_secrets (job_id, key_id, account_id, key_name, hint, ciphertext, \
         old_secret_expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&record.job_id)
    .bind(&record.key_id)
    .bind(account)
    .bind(&record.key_name)
    .bind(&record.hint)
    .bind(&record.ciphertext)
    .bind(record.old_secret_expires_at)
    .bind(record.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(JobRotation::Rotated(record))
}

/// A page of the secrets a job recorded, by key id.
pub(super) async fn list_secrets(
    conn: &mut AnyConnection,
    account: &str,
    job_id: &str,
    window: PageWindow<'_>,
) -> StoreResult<Page<JobSecret>> {
    ensure_job(conn, account, job_id).await?;
    let rows = sqlx::query(&format!(
        "{SECRET_SELECT} WHERE account_id = $1 AND job_id = $2 AND ($3 IS NULL OR key_id > $3) \
         ORDER BY key_id LIMIT $4"
    ))
    .bind(account)
    .bind(job_id)
    .bind(window.after)
    .bind(window.fetch_limit())
    .fetch_all(conn)
    .await?;
    let secrets = rows
        .iter()
        .map(secret_from_row)
        .collect::<StoreResult<_>>()?;
    Ok(window.into_page(secrets, |s: &JobSecret| &s.key_id))
}

/// Marks up to `limit` active keys past their expiry as `expired`, with an
/// audit event each; returns how many. The job calls it until it returns 0,
/// keeping each transaction short.
pub(super) async fn expire_due_keys(
    conn: &mut AnyConnection,
    now: i64,
    limit: u32,
) -> StoreResult<u64> {
    let due: Vec<(String, String)> = sqlx::query_as(
        "SELECT account_id, id FROM api_keys WHERE status = $1 AND expires_at IS NOT NULL \
         AND expires_at <= $2 ORDER BY id LIMIT $3",
    )
    .bind(KeyStatus::Active.as_str())
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    for (account, id) in &due {
        sqlx::query("UPDATE api_keys SET status = $3, updated_at = $4 WHERE account_id = $1 AND id = $2 AND status = $5")
            .bind(account)
            .bind(id)
            .bind(KeyStatus::Expired.as_str())
            .bind(now)
            .bind(KeyStatus::Active.as_str())
            .execute(&mut *conn)
            .await?;
        let (before, after) = (json!({"status": "active"}), json!({"status": "expired"}));
        audit::append(
            conn,
            account,
            &Actor::system(),
            "key.expired",
            "key",
            id,
            Some(before),
            Some(after),
        )
        .await?;
    }
    Ok(due.len() as u64)
}
