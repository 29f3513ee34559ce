//! Background jobs (seed 004): start bulk operations, and watch every job's
//! status, progress and result. A bulk rotation's new secrets come back
//! through `GET /v1/jobs/{id}/secrets`, each encrypted to the age public key
//! the caller started the job with: the server never stores them readable.

use super::field;
use super::keys::MAX_GRACE_SECONDS;
use super::views::List;
use crate::AppState;
use crate::auth::{Authorized, ManageCredentials};
use crate::clock::{from_ms, from_ms_opt};
use crate::extract::{Body, Ordering, Pagination};
use crate::jobs::{DEFAULT_ROTATION_GRACE_SECONDS, DISABLE_KEYS, REVOKE_KEYS, ROTATE_KEYS};
use crate::problem::{ApiResult, Problem, ProblemDocument};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_core::{KeyStatus, validate_environment_name};
use keyward_store::{Job, JobSecret, NewJob};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::str::FromStr;
use time::OffsetDateTime;
use utoipa::ToSchema;

type Auth = Authorized<ManageCredentials>;

/// The bulk operations a job can run.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::enum_variant_names)] // the names are the wire values: `*_keys`
pub enum BulkOperation {
    DisableKeys,
    RevokeKeys,
    /// Issues a new secret for every matching active or inactive key (revoked
    /// and expired keys are skipped), like `POST /v1/keys/{id}/rotate` does
    /// for one. The new secrets are encrypted to `recipient` and listed by
    /// `GET /v1/jobs/{id}/secrets`.
    RotateKeys,
}

/// Applies the operation to every key of a workspace matching the filters.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartJob {
    pub kind: BulkOperation,
    pub workspace_id: String,
    /// Only keys of this environment.
    pub environment: Option<String>,
    /// Only keys with this status.
    pub status: Option<KeyStatus>,
    /// `rotate_keys` only: how long each replaced secret keeps working, from
    /// 0 (stops at once) to 604800 (7 days). Default 86400 (a day).
    pub grace_seconds: Option<u32>,
    /// `rotate_keys` only, and required there: an age X25519 public key
    /// (`age1…`, as `age-keygen` prints it). Each new secret is encrypted to
    /// it; only the holder of the matching identity can read them.
    pub recipient: Option<String>,
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

/// The parameters only `rotate_keys` takes, checked; refused for the other
/// kinds rather than silently ignored.
fn rotation_params(
    kind: BulkOperation,
    recipient: Option<&str>,
    grace_seconds: Option<u32>,
    params: &mut Map<String, Value>,
) -> ApiResult<()> {
    if !matches!(kind, BulkOperation::RotateKeys) {
        for (name, given) in [
            ("recipient", recipient.is_some()),
            ("grace_seconds", grace_seconds.is_some()),
        ] {
            if given {
                return Err(Problem::invalid(name, "only rotate_keys takes this field"));
            }
        }
        return Ok(());
    }
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
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = StartJob,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 202, body = JobView), (status = 400, body = ProblemDocument), (status = 404, body = ProblemDocument)))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Body(request): Body<StartJob>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    state
        .store
        .get_workspace(&who.account_id, &request.workspace_id)
        .await
        .map_err(|e| crate::problem::Problem::from(e).with_field("workspace_id"))?;
    let mut params = Map::new();
    params.insert("workspace_id".into(), Value::String(request.workspace_id));
    if let Some(environment) = request.environment {
        validate_environment_name(&environment).map_err(field("environment"))?;
        params.insert("environment".into(), Value::String(environment));
    }
    if let Some(status) = request.status {
        params.insert("status".into(), Value::String(status.as_str().into()));
    }
    rotation_params(
        request.kind,
        request.recipient.as_deref(),
        request.grace_seconds,
        &mut params,
    )?;
    let kind = match request.kind {
        BulkOperation::DisableKeys => DISABLE_KEYS,
        BulkOperation::RevokeKeys => REVOKE_KEYS,
        BulkOperation::RotateKeys => ROTATE_KEYS,
    };
    let new = NewJob {
        kind: kind.into(),
        params,
        created_by: Some(who.member_id.clone()),
    };
    let job = state
        .store
        .enqueue_job(Some(&who.account_id), &who.actor(), new)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

/// The account's jobs, oldest first, or newest first with `order=desc`.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs",
    params(("order" = Option<String>, Query, description = "`asc` (the default: oldest first) or `desc` (newest first)"),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
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
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
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
#[utoipa::path(get, path = "/v1/jobs/{id}/secrets", tag = "jobs",
    params(("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
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
