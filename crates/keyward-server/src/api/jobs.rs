//! Background jobs (seed 004): start bulk operations, and watch every job's
//! status, progress and result.

use super::field;
use super::views::List;
use crate::AppState;
use crate::auth::{Authorized, ManageCredentials};
use crate::clock::{from_ms, from_ms_opt};
use crate::extract::{Body, Pagination};
use crate::jobs::{DISABLE_KEYS, REVOKE_KEYS};
use crate::problem::{ApiResult, ProblemDocument};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_core::{KeyStatus, validate_environment_name};
use keyward_store::{Job, NewJob};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use utoipa::ToSchema;

type Auth = Authorized<ManageCredentials>;

/// The bulk operations a job can run.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkOperation {
    DisableKeys,
    RevokeKeys,
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

/// Starts a bulk operation; answers at once with the queued job.
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
    let kind = match request.kind {
        BulkOperation::DisableKeys => DISABLE_KEYS,
        BulkOperation::RevokeKeys => REVOKE_KEYS,
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

/// The account's jobs, oldest first.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs",
    params(("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = List<JobView>)))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    page: Pagination,
) -> ApiResult<Json<List<JobView>>> {
    let jobs = state
        .store
        .list_jobs(&who.account_id, &page.request())
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
