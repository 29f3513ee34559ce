//! The background-job worker (seed 004): runs queued jobs from the store,
//! recovers jobs whose worker died, and schedules the expiry sweep.
//!
//! Bulk jobs: disable and revoke keys matching a filter, and rotate them.
//! A bulk rotation hands the caller one new secret per key, yet secrets are
//! never stored: each is encrypted (age, X25519) to the public key the
//! caller gave when starting the job, and only that ciphertext is kept —
//! recorded in the same store transaction as the rotation, which is also
//! what keeps a resumed job from rotating a key twice.
//!
//! A log export renders the logs a filter matches into gzip parts stored
//! as it goes (`export.rs`), so that any node can serve the file and none
//! holds it whole; a resumed export starts its file over.
//!
//! Jobs live in the store, not in memory, so a restart loses none: a job
//! that was running when its process died stops sending heartbeats and is
//! queued again by the next worker to look (or failed after a few tries).

use crate::cache::VerifyCache;
use crate::clock::now_ms;
use crate::export::{ExportFormat, ExportWriter, PART_BYTES};
use crate::secrets;
use keyward_core::{EnvTag, KeyFormat, KeyKind, KeyStatus, validate_environment_name};
use keyward_store::{
    Actor, ApiKey, Job, JobKeyReplacement, JobOutcome, KeyFilter, KeyReplacement, NewJob,
    PageRequest, RequestLogFilter, Store, StoreError,
};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub const EXPIRE_KEYS: &str = "expire_keys";
pub const PURGE_REQUEST_LOGS: &str = "purge_request_logs";
pub const DISABLE_KEYS: &str = "disable_keys";
pub const REVOKE_KEYS: &str = "revoke_keys";
pub const ROTATE_KEYS: &str = "rotate_keys";
pub const EXPORT_LOGS: &str = "export_logs";

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
/// How long a log export's file can be downloaded.
const EXPORT_RETENTION_MS: i64 = 7 * DAY_MS;

pub struct Worker {
    store: Arc<dyn Store>,
    cache: Arc<VerifyCache>,
    /// The deployment's key format, to mint the secrets of bulk rotations.
    format: KeyFormat,
    log_retention_days: u32,
}

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<VerifyCache>,
        format: KeyFormat,
        log_retention_days: u32,
    ) -> Self {
        Self {
            store,
            cache,
            format,
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
            // Bulk changes bypass the admin API's invalidation: each drops
            // the key it changed as it goes (`bulk`, `rotate`).
            let outcome = self.perform(&job).await;
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
            (ROTATE_KEYS, Some(account)) => match RotationParams::from_params(&job.params) {
                Ok(params) => self.rotate(job, account, &params).await,
                Err(reason) => return JobOutcome::Failed(reason),
            },
            (EXPORT_LOGS, Some(account)) => {
                return match self.export_logs(job, account).await {
                    Ok(summary) => JobOutcome::Succeeded(summary),
                    Err(reason) => JobOutcome::Failed(reason),
                };
            }
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

    /// Enforces log retention, and deletes log exports a week old.
    async fn purge_request_logs(&self) -> Result<Map<String, Value>, StoreError> {
        let now = now_ms();
        let before = now - i64::from(self.log_retention_days) * DAY_MS;
        let purged = self.store.purge_request_logs(before).await?;
        metrics::counter!(crate::telemetry::LOGS_PURGED).increment(purged);
        let export_parts = self
            .store
            .purge_job_exports(now - EXPORT_RETENTION_MS)
            .await?;
        Ok(summary(json!({
            "purged": purged,
            "retention_days": self.log_retention_days,
            "export_parts_purged": export_parts,
        })))
    }

    /// Writes the account's request logs matching the job's filter, newest
    /// first, into gzip parts in the store. A resumed job starts its file
    /// over: the parts an earlier attempt wrote are deleted first.
    async fn export_logs(&self, job: &Job, account: &str) -> Result<Map<String, Value>, String> {
        let (filter, format) = export_request(&job.params)?;
        let store_failed = |error: StoreError| error.to_string();
        self.store
            .clear_job_export(account, &job.id)
            .await
            .map_err(store_failed)?;
        let mut writer = ExportWriter::new(format, PART_BYTES);
        let (mut rows, mut parts, mut bytes) = (0u64, 0u32, 0u64);
        let mut page = PageRequest {
            limit: 100,
            after: None,
        };
        let mut store_part = async |data: Vec<u8>| {
            self.store
                .add_job_export_part(account, &job.id, parts, &data)
                .await
                .map_err(store_failed)?;
            parts += 1;
            bytes += data.len() as u64;
            Ok::<_, String>(())
        };
        loop {
            let logs = self
                .store
                .list_request_logs(account, &filter, &page)
                .await
                .map_err(store_failed)?;
            for log in logs.items {
                rows += 1;
                let rendered = writer.push(&log.into()).map_err(|e| e.to_string())?;
                if let Some(data) = rendered {
                    store_part(data).await?;
                }
            }
            if rows.is_multiple_of(PROGRESS_EVERY * 20) || logs.next_after.is_none() {
                self.store
                    .report_job_progress(&job.id, rows, None)
                    .await
                    .map_err(store_failed)?;
            }
            match logs.next_after {
                Some(after) => page.after = Some(after),
                None => break,
            }
        }
        if let Some(data) = writer.finish().map_err(|e| e.to_string())? {
            store_part(data).await?;
        }
        Ok(summary(json!({
            "rows": rows,
            "format": format.as_str(),
            "parts": parts,
            "bytes": bytes,
            "download": format!("/v1/jobs/{}/export", job.id),
        })))
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
        let ids: Vec<String> = self
            .matching_keys(account, &bulk_filter(&job.params))
            .await?
            .into_iter()
            .map(|k| k.id)
            .collect();
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
                Ok(()) => {
                    // In effect on this node now, not when the job ends.
                    self.cache.invalidate_key(id);
                    changed += 1;
                }
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

    /// Rotates every key matching the job's filter, each with a new secret
    /// that only the job's recipient can read. Revoked and expired keys are
    /// skipped and reported. Each key's rotation and the record of its
    /// sealed secret commit together (`Store::rotate_key_for_job`), so a
    /// resumed job passes over the keys an earlier attempt rotated — and
    /// still counts and lists them — instead of rotating them again.
    async fn rotate(
        &self,
        job: &Job,
        account: &str,
        params: &RotationParams,
    ) -> Result<Map<String, Value>, StoreError> {
        let filter = bulk_filter(&job.params);
        let keys = self.matching_keys(account, &filter).await?;
        let total = keys.len() as u64;
        let tags = self.environment_tags(account, &filter).await?;
        let actor = Actor {
            member_id: job.created_by.clone(),
            token_id: None,
            ip: None,
        };
        let (mut rotated, mut skipped) = (0u64, Vec::new());
        for (done, key) in keys.iter().enumerate() {
            let skip = |reason: &str| json!({"key_id": key.id, "name": key.name, "reason": reason});
            match tags.get(&key.environment) {
                None => skipped.push(skip("the key's environment no longer exists")),
                Some(tag) => match self
                    .rotate_one(job, account, &actor, params, key, tag)
                    .await
                {
                    Ok(()) => {
                        // Without grace, the old secret stops working now.
                        self.cache.invalidate_key(&key.id);
                        rotated += 1;
                    }
                    Err(Rotation::Sealing(error)) => {
                        // Before the store saw anything: the key is unchanged.
                        tracing::warn!(%error, key_id = %key.id, "bulk rotation: cannot encrypt");
                        skipped.push(skip(
                            "the new secret could not be encrypted; the key is unchanged",
                        ));
                    }
                    Err(Rotation::Store(
                        StoreError::Conflict { message, .. } | StoreError::Refused { message, .. },
                    )) => skipped.push(skip(&message)),
                    Err(Rotation::Store(StoreError::NotFound { .. })) => {
                        skipped.push(skip("the key was deleted while the job ran"));
                    }
                    Err(Rotation::Store(other)) => return Err(other),
                },
            }
            let done = done as u64 + 1;
            if done.is_multiple_of(PROGRESS_EVERY) || done == total {
                self.store
                    .report_job_progress(&job.id, done, Some(total))
                    .await?;
            }
        }
        Ok(summary(json!({
            "matched": total,
            "rotated": rotated,
            "skipped": skipped,
            "grace_seconds": params.grace_seconds,
            "secrets": format!("/v1/jobs/{}/secrets", job.id),
        })))
    }

    /// Mints, seals and hands one key's new secret to the store. The
    /// plaintext lives only here, in a zeroized `Secret`, until it is sealed.
    async fn rotate_one(
        &self,
        job: &Job,
        account: &str,
        actor: &Actor,
        params: &RotationParams,
        key: &ApiKey,
        tag: &EnvTag,
    ) -> Result<(), Rotation> {
        let secret = secrets::mint(&self.format, tag);
        let ciphertext = age::encrypt_and_armor(&params.recipient, secret.expose().as_bytes())
            .map_err(Rotation::Sealing)?;
        let rotation = JobKeyReplacement {
            job_id: job.id.clone(),
            replacement: KeyReplacement {
                key_id: key.id.clone(),
                hash_hex: secret.hash().to_hex(),
                hint: secret.hint(),
                public_value: (key.kind == KeyKind::Publishable)
                    .then(|| secret.expose().to_owned()),
                grace_ms: i64::from(params.grace_seconds) * 1000,
            },
            ciphertext,
        };
        match self
            .store
            .rotate_key_for_job(account, actor, rotation)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(Rotation::Store(e)),
        }
    }

    /// The tag of each environment the filter's workspace has, by name.
    async fn environment_tags(
        &self,
        account: &str,
        filter: &KeyFilter,
    ) -> Result<HashMap<String, EnvTag>, StoreError> {
        let Some(workspace) = &filter.workspace_id else {
            return Ok(HashMap::new());
        };
        let environments = match self.store.list_environments(account, workspace).await {
            Err(StoreError::NotFound { .. }) => return Ok(HashMap::new()),
            other => other?,
        };
        Ok(environments
            .into_iter()
            .filter_map(|e| Some((e.name, EnvTag::parse_environment_tag(&e.tag).ok()?)))
            .collect())
    }

    async fn matching_keys(
        &self,
        account: &str,
        filter: &KeyFilter,
    ) -> Result<Vec<ApiKey>, StoreError> {
        let mut found = Vec::new();
        let mut page = PageRequest {
            limit: 100,
            after: None,
        };
        loop {
            let keys = self.store.list_keys(account, filter, &page).await?;
            found.extend(keys.items);
            match keys.next_after {
                Some(after) => page.after = Some(after),
                None => return Ok(found),
            }
        }
    }
}

/// Why one key of a bulk rotation was not rotated.
enum Rotation {
    Sealing(age::EncryptError),
    Store(StoreError),
}

/// How long a rotated-out secret keeps working when a bulk rotation does
/// not say: a day, time enough to roll the new secrets out.
pub const DEFAULT_ROTATION_GRACE_SECONDS: u32 = 86_400;

/// What a `rotate_keys` job was queued with beyond its filter (validated
/// by the API; checked again here, since the row could be older code's).
pub struct RotationParams {
    /// Who can read the new secrets: an age X25519 public key (`age1…`).
    pub recipient: age::x25519::Recipient,
    pub grace_seconds: u32,
}

impl RotationParams {
    pub fn from_params(params: &Map<String, Value>) -> Result<Self, String> {
        let recipient = params
            .get("recipient")
            .and_then(Value::as_str)
            .ok_or("the job has no recipient to encrypt the new secrets to")?;
        let recipient = age::x25519::Recipient::from_str(recipient)
            .map_err(|e| format!("the job's recipient is not an age X25519 public key: {e}"))?;
        let grace_seconds = match params.get("grace_seconds") {
            None => DEFAULT_ROTATION_GRACE_SECONDS,
            Some(value) => value
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or("the job's grace_seconds is not a number of seconds")?,
        };
        Ok(Self {
            recipient,
            grace_seconds,
        })
    }
}

/// What an `export_logs` job was queued with: the filter of `GET /v1/logs`
/// and the format (validated by the API; checked again, like a rotation's).
fn export_request(params: &Map<String, Value>) -> Result<(RequestLogFilter, ExportFormat), String> {
    let filter = crate::api::logs::filter_from_params(params)
        .map_err(|problem| format!("the job's filter is invalid: {}", problem.detail))?;
    let format = ExportFormat::parse_or_default(params.get("format").and_then(Value::as_str))
        .ok_or("the job's format is neither csv nor ndjson")?;
    Ok((filter, format))
}

/// The filter a bulk job was queued with (validated by the API).
pub fn bulk_filter(params: &Map<String, Value>) -> KeyFilter {
    let text = |name: &str| params.get(name).and_then(Value::as_str).map(str::to_owned);
    KeyFilter {
        workspace_id: text("workspace_id"),
        environment: text("environment").filter(|e| validate_environment_name(e).is_ok()),
        status: text("status").and_then(|s| KeyStatus::parse(&s).ok()),
        kind: None,
    }
}

fn summary(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
