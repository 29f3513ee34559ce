//! The background-job worker (seed 004): runs queued jobs from the store,
//! recovers jobs whose worker died, and schedules the expiry sweep.
//!
//! Jobs live in the store, not in memory, so a restart loses none: a job
//! that was running when its process died stops sending heartbeats and is
//! queued again by the next worker to look (or failed after a few tries).

use crate::cache::VerifyCache;
use crate::clock::now_ms;
use keyward_core::{KeyStatus, validate_environment_name};
use keyward_store::{Actor, Job, JobOutcome, KeyFilter, NewJob, PageRequest, Store, StoreError};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub const EXPIRE_KEYS: &str = "expire_keys";
pub const PURGE_REQUEST_LOGS: &str = "purge_request_logs";
pub const DISABLE_KEYS: &str = "disable_keys";
pub const REVOKE_KEYS: &str = "revoke_keys";

/// How often the worker looks for work.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// A running job whose heartbeat is older than this lost its worker.
/// Running jobs beat at least every [`PROGRESS_EVERY`] keys, far more often.
const STALE_AFTER_MS: i64 = 30_000;
/// The deployment's own recurring jobs and how often each runs. The expiry
/// sweep only records the status (verification refuses expired keys by
/// their `expires_at` at once); the purge enforces log retention.
const SCHEDULE: [(&str, i64); 2] = [(EXPIRE_KEYS, 60_000), (PURGE_REQUEST_LOGS, 3_600_000)];
const SWEEP_BATCH: u32 = 500;
const PROGRESS_EVERY: u64 = 50;
const DAY_MS: i64 = 86_400_000;

pub struct Worker {
    store: Arc<dyn Store>,
    cache: Arc<VerifyCache>,
    log_retention_days: u32,
}

impl Worker {
    pub fn new(store: Arc<dyn Store>, cache: Arc<VerifyCache>, log_retention_days: u32) -> Self {
        Self {
            store,
            cache,
            log_retention_days,
        }
    }

    /// Works until `shutdown` fires. A job in progress at shutdown is left
    /// running; its heartbeat stops and a later worker picks it up again.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_due = [0; SCHEDULE.len()];
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(error) = self.step(&mut next_due).await {
                        tracing::warn!(%error, "background jobs: will retry");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn step(&self, next_due: &mut [i64; SCHEDULE.len()]) -> Result<(), StoreError> {
        let now = now_ms();
        let recovered = self.store.recover_stale_jobs(now - STALE_AFTER_MS).await?;
        if recovered > 0 {
            tracing::warn!(
                recovered,
                "background jobs: resumed jobs whose worker stopped"
            );
        }
        for ((kind, every_ms), due) in SCHEDULE.iter().zip(next_due.iter_mut()) {
            if now < *due {
                continue;
            }
            // Several nodes may share the store: one pending run is enough.
            if !self.store.job_pending(kind).await? {
                let job = NewJob {
                    kind: (*kind).into(),
                    params: Map::new(),
                    created_by: None,
                };
                self.store.enqueue_job(None, &Actor::system(), job).await?;
            }
            *due = now + every_ms;
        }
        while let Some(job) = self.store.claim_job().await? {
            let outcome = self.perform(&job).await;
            if let Some(account) = &job.account_id {
                // Bulk changes bypass the admin API's invalidation.
                self.cache.invalidate_account(account);
            }
            self.store.finish_job(&job.id, outcome).await?;
        }
        Ok(())
    }

    async fn perform(&self, job: &Job) -> JobOutcome {
        let result = match (job.kind.as_str(), job.account_id.as_deref()) {
            (EXPIRE_KEYS, None) => self.expire_keys(job).await,
            (PURGE_REQUEST_LOGS, None) => self.purge_request_logs().await,
            (DISABLE_KEYS, Some(account)) => self.bulk(job, account, KeyStatus::Inactive).await,
            (REVOKE_KEYS, Some(account)) => self.bulk(job, account, KeyStatus::Revoked).await,
            (kind, _) => return JobOutcome::Failed(format!("unknown job kind {kind:?}")),
        };
        match result {
            Ok(summary) => JobOutcome::Succeeded(summary),
            Err(error) => JobOutcome::Failed(error.to_string()),
        }
    }

    async fn expire_keys(&self, job: &Job) -> Result<Map<String, Value>, StoreError> {
        let mut expired = 0;
        loop {
            let batch = self.store.expire_due_keys(SWEEP_BATCH).await?;
            expired += batch;
            self.store
                .report_job_progress(&job.id, expired, None)
                .await?;
            if batch < u64::from(SWEEP_BATCH) {
                break;
            }
        }
        Ok(summary(json!({"expired": expired})))
    }

    async fn purge_request_logs(&self) -> Result<Map<String, Value>, StoreError> {
        let before = now_ms() - i64::from(self.log_retention_days) * DAY_MS;
        let purged = self.store.purge_request_logs(before).await?;
        metrics::counter!(crate::telemetry::LOGS_PURGED).increment(purged);
        Ok(summary(
            json!({"purged": purged, "retention_days": self.log_retention_days}),
        ))
    }

    /// Disables or revokes every key matching the job's filter. Keys a
    /// lifecycle rule protects (a workspace's last ingest key, a key an
    /// integration uses) are skipped and reported, never forced. Re-running
    /// after a crash is safe: both changes are idempotent.
    async fn bulk(
        &self,
        job: &Job,
        account: &str,
        status: KeyStatus,
    ) -> Result<Map<String, Value>, StoreError> {
        let ids = self
            .matching_keys(account, &bulk_filter(&job.params))
            .await?;
        let total = ids.len() as u64;
        let actor = Actor {
            member_id: job.created_by.clone(),
            token_id: None,
            ip: None,
        };
        let (mut changed, mut skipped) = (0u64, Vec::new());
        for (done, id) in ids.iter().enumerate() {
            let applied = match status {
                KeyStatus::Revoked => self
                    .store
                    .revoke_key(account, &actor, id, false)
                    .await
                    .map(|_| ()),
                _ => self
                    .store
                    .set_key_status(account, &actor, id, status)
                    .await
                    .map(|_| ()),
            };
            match applied {
                Ok(()) => changed += 1,
                Err(StoreError::Refused { message, .. } | StoreError::Conflict { message, .. }) => {
                    skipped.push(json!({"key_id": id, "reason": message}));
                }
                Err(StoreError::NotFound { .. }) => {} // deleted meanwhile
                Err(other) => return Err(other),
            }
            let done = done as u64 + 1;
            if done.is_multiple_of(PROGRESS_EVERY) || done == total {
                self.store
                    .report_job_progress(&job.id, done, Some(total))
                    .await?;
            }
        }
        Ok(summary(
            json!({"matched": total, "changed": changed, "skipped": skipped}),
        ))
    }

    async fn matching_keys(
        &self,
        account: &str,
        filter: &KeyFilter,
    ) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        let mut page = PageRequest {
            limit: 100,
            after: None,
        };
        loop {
            let keys = self.store.list_keys(account, filter, &page).await?;
            ids.extend(keys.items.into_iter().map(|k| k.id));
            match keys.next_after {
                Some(after) => page.after = Some(after),
                None => return Ok(ids),
            }
        }
    }
}

/// The filter a bulk job was queued with (validated by the API).
pub fn bulk_filter(params: &Map<String, Value>) -> KeyFilter {
    let text = |name: &str| params.get(name).and_then(Value::as_str).map(str::to_owned);
    KeyFilter {
        workspace_id: text("workspace_id"),
        environment: text("environment").filter(|e| validate_environment_name(e).is_ok()),
        status: text("status").and_then(|s| KeyStatus::parse(&s).ok()),
    }
}

fn summary(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
