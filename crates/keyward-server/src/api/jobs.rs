//! Background jobs (seed 004): start bulk operations, and watch every job's
//! status, progress and result. A bulk rotation's new secrets come back
//! through `GET /v1/jobs/{id}/secrets`, each encrypted to the age public key
//! the caller started the job with: the server never stores them readable.
//! A log export's file comes back from `GET /v1/jobs/{id}/export`.

use super::keys::MAX_GRACE_SECONDS;
use super::views::List;
use super::{field, logs};
use crate::AppState;
use crate::auth::{Authorized, ManageCredentials};
use crate::clock::{from_ms, from_ms_opt};
use crate::export::ExportFormat;
use crate::extract::{Body, Ordering, Pagination};
use crate::invalidate::InvalidationSlot;
use crate::jobs::{
    DEFAULT_ROTATION_GRACE_SECONDS, DISABLE_KEYS, EXPORT_LOGS, REVOKE_KEYS, ROTATE_KEYS,
};
use crate::problem::{ApiResult, Problem, ProblemDocument};
use axum::Json;
use axum::body::{Body as ResponseBody, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use keyward_core::{KeyStatus, validate_environment_name};
use keyward_store::{Job, JobSecret, JobStatus, NewJob, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::str::FromStr;
use std::sync::Arc;
use time::OffsetDateTime;
use utoipa::ToSchema;

type Auth = Authorized<ManageCredentials>;

/// The work a job can be started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    DisableKeys,
    RevokeKeys,
    /// Issues a new secret for every matching active or inactive key (revoked
    /// and expired keys are skipped), like `POST /v1/keys/{id}/rotate` does
    /// for one. The new secrets are encrypted to `recipient` and listed by
    /// `GET /v1/jobs/{id}/secrets`.
    RotateKeys,
    /// Writes the request logs matching the filters (the workspace's, or
    /// the whole account's) to a gzip-compressed CSV or NDJSON file, newest
    /// first, downloaded from `GET /v1/jobs/{id}/export` for 7 days.
    ExportLogs,
}

impl JobKind {
    const ALL: [Self; 4] = [
        Self::DisableKeys,
        Self::RevokeKeys,
        Self::RotateKeys,
        Self::ExportLogs,
    ];
    const BULK: [Self; 3] = [Self::DisableKeys, Self::RevokeKeys, Self::RotateKeys];

    fn name(self) -> &'static str {
        match self {
            Self::DisableKeys => DISABLE_KEYS,
            Self::RevokeKeys => REVOKE_KEYS,
            Self::RotateKeys => ROTATE_KEYS,
            Self::ExportLogs => EXPORT_LOGS,
        }
    }
}

/// Starts a job on the keys of a workspace matching the filters, or on the
/// request logs matching them. Each kind takes the fields listed with it
/// and refuses the others.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartJob {
    pub kind: JobKind,
    /// Key jobs: required. `export_logs`: only this workspace's logs.
    pub workspace_id: Option<String>,
    /// Only keys (or logs) of this environment.
    pub environment: Option<String>,
    /// Key jobs only: only keys with this status.
    pub status: Option<KeyStatus>,
    /// `rotate_keys` only: how long each replaced secret keeps working, from
    /// 0 (stops at once) to 604800 (7 days). Default 86400 (a day).
    pub grace_seconds: Option<u32>,
    /// `rotate_keys` only, and required there: an age X25519 public key
    /// (`age1…`, as `age-keygen` prints it). Each new secret is encrypted to
    /// it; only the holder of the matching identity can read them.
    pub recipient: Option<String>,
    /// `export_logs` only: only this key's logs.
    pub key_id: Option<String>,
    /// `export_logs` only: only this outcome (`valid`, `rate_limited`…).
    pub code: Option<String>,
    /// `export_logs` only: logs at or after this time (RFC 3339).
    pub from: Option<String>,
    /// `export_logs` only: logs before this time (RFC 3339).
    pub to: Option<String>,
    /// `export_logs` only: `csv` (the default) or `ndjson`.
    pub format: Option<ExportFormat>,
}

impl StartJob {
    /// A job of `kind` with no field set, to fill in.
    pub fn of(kind: JobKind) -> Self {
        Self {
            kind,
            workspace_id: None,
            environment: None,
            status: None,
            grace_seconds: None,
            recipient: None,
            key_id: None,
            code: None,
            from: None,
            to: None,
            format: None,
        }
    }

    /// Refuses each field the kind does not take, rather than ignoring it.
    fn check_fields_apply(&self) -> ApiResult<()> {
        use JobKind::{ExportLogs, RotateKeys};
        let fields: [(&str, bool, &[JobKind]); 10] = [
            ("workspace_id", self.workspace_id.is_some(), &JobKind::ALL),
            ("environment", self.environment.is_some(), &JobKind::ALL),
            ("status", self.status.is_some(), &JobKind::BULK),
            ("grace_seconds", self.grace_seconds.is_some(), &[RotateKeys]),
            ("recipient", self.recipient.is_some(), &[RotateKeys]),
            ("key_id", self.key_id.is_some(), &[ExportLogs]),
            ("code", self.code.is_some(), &[ExportLogs]),
            ("from", self.from.is_some(), &[ExportLogs]),
            ("to", self.to.is_some(), &[ExportLogs]),
            ("format", self.format.is_some(), &[ExportLogs]),
        ];
        for (name, given, kinds) in fields {
            if given && !kinds.contains(&self.kind) {
                return Err(Problem::invalid(
                    name,
                    format!("{} does not take this field", self.kind.name()),
                ));
            }
        }
        Ok(())
    }
}

/// One key a bulk rotation rotated, and its new secret — encrypted.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobSecretView {
    pub key_id: String,
    /// The key's name when it was rotated.
    pub name: String,
    /// The new secret's hint.
    pub hint: String,
    /// The new secret, encrypted to the job's recipient: an ASCII-armored
    /// age file (`-----BEGIN AGE ENCRYPTED FILE-----`). Decrypt it with the
    /// matching identity, e.g. `age --decrypt -i key.txt`.
    pub ciphertext: String,
    /// Until when the replaced secret keeps working.
    #[serde(with = "time::serde::rfc3339")]
    pub old_secret_expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub rotated_at: OffsetDateTime,
}

impl From<JobSecret> for JobSecretView {
    fn from(s: JobSecret) -> Self {
        Self {
            key_id: s.key_id,
            name: s.key_name,
            hint: s.hint,
            ciphertext: s.ciphertext,
            old_secret_expires_at: from_ms(s.old_secret_expires_at),
            rotated_at: from_ms(s.created_at),
        }
    }
}

/// A key job's parameters: its workspace (required), filters and, for a
/// rotation, its own.
fn key_job_params(request: &StartJob) -> ApiResult<Map<String, Value>> {
    let workspace = request
        .workspace_id
        .as_ref()
        .ok_or_else(|| Problem::invalid("workspace_id", "key jobs work on one workspace's keys"))?;
    let mut params = Map::new();
    params.insert("workspace_id".into(), Value::String(workspace.clone()));
    if let Some(environment) = &request.environment {
        validate_environment_name(environment).map_err(field("environment"))?;
        params.insert("environment".into(), Value::String(environment.clone()));
    }
    if let Some(status) = request.status {
        params.insert("status".into(), Value::String(status.as_str().into()));
    }
    if request.kind == JobKind::RotateKeys {
        rotation_params(
            request.recipient.as_deref(),
            request.grace_seconds,
            &mut params,
        )?;
    }
    Ok(params)
}

/// `rotate_keys`' own parameters, checked.
fn rotation_params(
    recipient: Option<&str>,
    grace_seconds: Option<u32>,
    params: &mut Map<String, Value>,
) -> ApiResult<()> {
    let recipient = recipient.ok_or_else(|| {
        Problem::invalid(
            "recipient",
            "rotate_keys needs the age X25519 public key (age1…) to encrypt the new secrets to",
        )
    })?;
    let recipient = age::x25519::Recipient::from_str(recipient.trim()).map_err(|_| {
        Problem::invalid(
            "recipient",
            "must be an age X25519 public key: age1… as age-keygen prints it",
        )
    })?;
    let grace_seconds = grace_seconds.unwrap_or(DEFAULT_ROTATION_GRACE_SECONDS);
    if grace_seconds > MAX_GRACE_SECONDS {
        return Err(Problem::invalid(
            "grace_seconds",
            format!("at most {MAX_GRACE_SECONDS} (7 days)"),
        ));
    }
    params.insert("recipient".into(), Value::String(recipient.to_string()));
    params.insert("grace_seconds".into(), Value::from(grace_seconds));
    Ok(())
}

/// `export_logs`' parameters: the filters of `GET /v1/logs`, checked the
/// same way (the worker reads them back with the same function), and the
/// file's format.
fn export_params(request: &StartJob) -> ApiResult<Map<String, Value>> {
    let mut params = Map::new();
    let filters = [
        ("key_id", &request.key_id),
        ("workspace_id", &request.workspace_id),
        ("code", &request.code),
        ("environment", &request.environment),
        ("from", &request.from),
        ("to", &request.to),
    ];
    for (name, value) in filters {
        if let Some(value) = value {
            params.insert(name.into(), Value::String(value.clone()));
        }
    }
    logs::filter_from_params(&params)?;
    let format = request.format.unwrap_or_default();
    params.insert("format".into(), Value::String(format.as_str().into()));
    Ok(params)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    pub done: u64,
    /// Unknown until the job has counted its work.
    pub total: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: String,
    pub kind: String,
    /// `queued`, `running`, `succeeded` or `failed`.
    pub status: String,
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    pub progress: Progress,
    /// Once succeeded: what it did (counts, and the keys it skipped and why).
    #[schema(value_type = Option<Object>)]
    pub result: Option<Map<String, Value>>,
    /// Once failed: why.
    pub error: Option<String>,
    pub attempts: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

impl From<Job> for JobView {
    fn from(j: Job) -> Self {
        Self {
            id: j.id,
            kind: j.kind,
            status: j.status.as_str().to_owned(),
            params: j.params,
            progress: Progress {
                done: j.progress_done,
                total: j.progress_total,
            },
            result: j.result,
            error: j.error,
            attempts: j.attempts,
            created_at: from_ms(j.created_at),
            started_at: from_ms_opt(j.started_at),
            finished_at: from_ms_opt(j.finished_at),
        }
    }
}

/// Starts a bulk operation; answers at once with the queued job. Watch it
/// with `GET /v1/jobs/{id}`; a `rotate_keys` job's new secrets are then at
/// `GET /v1/jobs/{id}/secrets`.
#[utoipa::path(post, operation_id = "createJob", path = "/v1/jobs", tag = "jobs", request_body = StartJob,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 202, body = JobView), (status = 400, body = ProblemDocument), (status = 404, body = ProblemDocument)))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    invalidation: InvalidationSlot,
    Body(request): Body<StartJob>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    request.check_fields_apply()?;
    if let Some(workspace) = &request.workspace_id {
        state
            .store
            .get_workspace(&who.account_id, workspace)
            .await
            .map_err(|e| Problem::from(e).with_field("workspace_id"))?;
    }
    let params = match request.kind {
        JobKind::ExportLogs => export_params(&request)?,
        _ => key_job_params(&request)?,
    };
    let new = NewJob {
        kind: request.kind.name().into(),
        params,
        created_by: Some(who.member_id.clone()),
    };
    let job = state
        .store
        .enqueue_job(Some(&who.account_id), &who.actor(), new)
        .await?;
    // A queued job changes nothing yet; as it runs, it drops each key it
    // changes (`crate::jobs`).
    invalidation.only_added();
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

/// The account's jobs, oldest first, or newest first with `order=desc`.
#[utoipa::path(get, operation_id = "listJobs", path = "/v1/jobs", tag = "jobs",
    params(("order" = Option<String>, Query, pattern = "^(asc|desc)$", description = "`asc` (the default: oldest first) or `desc` (newest first)"),
        crate::extract::PageQuery),
    responses((status = 200, body = List<JobView>), (status = 400, body = ProblemDocument)))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Ordering(order): Ordering,
    page: Pagination,
) -> ApiResult<Json<List<JobView>>> {
    let jobs = state
        .store
        .list_jobs(&who.account_id, order, &page.request())
        .await?;
    Ok(Json(List::from_page(jobs, JobView::from)))
}

/// One job: status, progress and result.
#[utoipa::path(get, operation_id = "getJob", path = "/v1/jobs/{id}", tag = "jobs",
    responses((status = 200, body = JobView), (status = 404, body = ProblemDocument)))]
pub async fn get(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    Ok(Json(
        state.store.get_job(&who.account_id, &id).await?.into(),
    ))
}

/// The new secrets of a `rotate_keys` job, one per key it rotated, by key
/// id; each is encrypted to the recipient the job was started with, and
/// never stored or shown in the clear. Available as the job runs (the keys
/// rotated so far) and after; empty for other kinds of job.
#[utoipa::path(get, operation_id = "listJobSecrets", path = "/v1/jobs/{id}/secrets", tag = "jobs",
    params(crate::extract::PageQuery),
    responses((status = 200, body = List<JobSecretView>), (status = 404, body = ProblemDocument)))]
pub async fn secrets(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
    page: Pagination,
) -> ApiResult<Json<List<JobSecretView>>> {
    let secrets = state
        .store
        .list_job_secrets(&who.account_id, &id, &page.request())
        .await?;
    Ok(Json(List::from_page(secrets, JobSecretView::from)))
}

/// The file an `export_logs` job wrote: its request logs, newest first, as
/// gzip-compressed CSV or NDJSON (`Content-Disposition` names it). Streamed
/// part by part as the job stored it. Kept 7 days after the job ran. Each
/// download is audited (`job.export_downloaded`).
#[utoipa::path(get, operation_id = "exportJob", path = "/v1/jobs/{id}/export", tag = "jobs",
    responses(
        (status = 200, description = "The export, gzip-compressed", content_type = "application/gzip", body = String),
        (status = 404, body = ProblemDocument),
        (status = 409, description = "Not an export job, or it has not succeeded (yet)", body = ProblemDocument),
        (status = 410, description = "Deleted after 7 days: start a new export", body = ProblemDocument)))]
pub async fn export(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let job = state.store.get_job(&who.account_id, &id).await?;
    if job.kind != EXPORT_LOGS {
        return Err(Problem::conflict(
            "not_an_export",
            format!("a {} job has no file to download", job.kind),
        ));
    }
    if job.status != JobStatus::Succeeded {
        return Err(Problem::conflict(
            "export_not_ready",
            format!(
                "the job is {}: its file can be downloaded once it has succeeded",
                job.status.as_str()
            ),
        ));
    }
    let parts = job
        .result
        .as_ref()
        .and_then(|result| result.get("parts"))
        .and_then(Value::as_u64)
        .and_then(|parts| u32::try_from(parts).ok())
        .unwrap_or(0);
    let first = state
        .store
        .open_job_export(&who.account_id, &who.actor(), &id)
        .await?
        .ok_or_else(|| {
            Problem::new(
                StatusCode::GONE,
                "export_expired",
                "exports are deleted 7 days after they are written: start a new one",
            )
        })?;
    let format = ExportFormat::parse_or_default(job.params.get("format").and_then(Value::as_str))
        .unwrap_or_default();
    let file_name = format!("keyward-logs-{id}.{}", format.file_extension());
    let rest = remaining_parts(state.store.clone(), who.account_id.clone(), id, parts);
    let body = futures_util::stream::once(async { Ok(Bytes::from(first)) }).chain(rest);
    let headers = [
        (header::CONTENT_TYPE, "application/gzip".to_owned()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file_name}\""),
        ),
        (header::CACHE_CONTROL, "private, no-store".to_owned()),
    ];
    Ok((headers, ResponseBody::from_stream(body)).into_response())
}

/// Parts 1 to `parts - 1`, read one at a time as the client takes them. A
/// part gone missing (purged meanwhile) ends the body with an error, so the
/// client sees a broken transfer rather than a shorter file.
fn remaining_parts(
    store: Arc<dyn Store>,
    account: String,
    job_id: String,
    parts: u32,
) -> impl futures_util::Stream<Item = Result<Bytes, StoreError>> {
    futures_util::stream::try_unfold(1, move |part| {
        let (store, account, job_id) = (store.clone(), account.clone(), job_id.clone());
        async move {
            if part >= parts {
                return Ok(None);
            }
            let data = store
                .job_export_part(&account, &job_id, part)
                .await?
                .ok_or_else(|| StoreError::not_found("export part"))?;
            Ok(Some((Bytes::from(data), part + 1)))
        }
    })
}
