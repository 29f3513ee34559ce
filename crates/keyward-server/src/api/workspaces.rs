//! Workspaces and their environments.

use super::views::{CreatedKey, EnvironmentView, KeyView, List, WorkspaceView};
use super::{Created, field};
use crate::AppState;
use crate::accounts;
use crate::auth::{Authorized, ManageCredentials};
use crate::clock::now_ms;
use crate::extract::{Body, Pagination};
use crate::invalidate::InvalidationSlot;
use crate::problem::{ApiResult, Problem, ProblemDocument};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_core::{
    DEFAULT_ENVIRONMENTS, EnvTag, validate_display_name, validate_environment_name,
};
use keyward_store::NewWorkspace;
use serde::Deserialize;
use utoipa::ToSchema;

type Auth = Authorized<ManageCredentials>;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSpec {
    /// `production`, `staging`, `eu-production` …
    pub name: String,
    /// Short tag carried by keys: `kw_<tag>_…`.
    pub tag: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Defaults to production (`live`), staging (`stg`) and development (`dev`).
    pub environments: Option<Vec<EnvironmentSpec>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWorkspace {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
}

fn validate_environment(spec: &EnvironmentSpec, at: &str) -> ApiResult<(String, String)> {
    validate_environment_name(&spec.name).map_err(field(format!("{at}name")))?;
    EnvTag::parse_environment_tag(&spec.tag).map_err(field(format!("{at}tag")))?;
    Ok((spec.name.clone(), spec.tag.clone()))
}

fn environments_of(request: &CreateWorkspace) -> ApiResult<Vec<(String, String)>> {
    let Some(specs) = &request.environments else {
        return Ok(DEFAULT_ENVIRONMENTS
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect());
    };
    if specs.is_empty() || specs.len() > 20 {
        return Err(Problem::invalid(
            "environments",
            "give 1 to 20 environments",
        ));
    }
    let pairs = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| validate_environment(spec, &format!("environments[{i}].")))
        .collect::<ApiResult<Vec<_>>>()?;
    for (i, (name, tag)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(n, t)| n == name || t == tag) {
            return Err(Problem::invalid(
                format!("environments[{i}]"),
                "environment names and tags must be unique",
            ));
        }
    }
    Ok(pairs)
}

/// Lists the account's workspaces.
#[utoipa::path(get, operation_id = "listWorkspaces", path = "/v1/workspaces", tag = "workspaces",
    params(crate::extract::PageQuery),
    responses((status = 200, body = List<WorkspaceView>), (status = 401, body = ProblemDocument)))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    page: Pagination,
) -> ApiResult<Json<List<WorkspaceView>>> {
    let page = state
        .store
        .list_workspaces(&who.account_id, &page.request())
        .await?;
    Ok(Json(List::from_page(page, WorkspaceView::bare)))
}

/// Creates a workspace with its environments.
#[utoipa::path(post, operation_id = "createWorkspace", path = "/v1/workspaces", tag = "workspaces", request_body = CreateWorkspace,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = WorkspaceView), (status = 400, body = ProblemDocument)))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    invalidation: InvalidationSlot,
    Body(request): Body<CreateWorkspace>,
) -> ApiResult<Created<WorkspaceView>> {
    validate_display_name(&request.name).map_err(field("name"))?;
    let environments = environments_of(&request)?;
    let (environment, tag) = environments.first().ok_or_else(Problem::internal)?;
    let tag = EnvTag::parse_environment_tag(tag).map_err(field("environments[0].tag"))?;
    let (primary, secret) = accounts::primary_credentials(
        &state.format,
        environment,
        &tag,
        Some(who.member_id.clone()),
    );
    let new = NewWorkspace {
        name: request.name,
        environments,
        primary_key: Some(primary),
    };
    let mut created = state
        .store
        .create_workspace(&who.account_id, &who.actor(), new)
        .await?;
    invalidation.only_added();
    let primary_key = created.primary_key.take().ok_or_else(Problem::internal)?;
    let mut view = WorkspaceView::with_environments(created);
    view.primary_credentials = Some(CreatedKey {
        key: KeyView::new(primary_key, now_ms()),
        secret,
    });
    Ok(Created(view))
}

/// One workspace with its environments.
#[utoipa::path(get, operation_id = "getWorkspace", path = "/v1/workspaces/{id}", tag = "workspaces",
    responses((status = 200, body = WorkspaceView), (status = 404, body = ProblemDocument)))]
pub async fn get(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<WorkspaceView>> {
    let workspace = state.store.get_workspace(&who.account_id, &id).await?;
    let environments = state.store.list_environments(&who.account_id, &id).await?;
    Ok(Json(WorkspaceView::with_environments(
        keyward_store::WorkspaceWithEnvironments {
            workspace,
            environments,
            primary_key: None,
        },
    )))
}

/// Renames a workspace.
#[utoipa::path(patch, operation_id = "updateWorkspace", path = "/v1/workspaces/{id}", tag = "workspaces", request_body = UpdateWorkspace,
    responses((status = 200, body = WorkspaceView), (status = 404, body = ProblemDocument)))]
pub async fn update(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
    Body(request): Body<UpdateWorkspace>,
) -> ApiResult<Json<WorkspaceView>> {
    validate_display_name(&request.name).map_err(field("name"))?;
    let workspace = state
        .store
        .rename_workspace(&who.account_id, &who.actor(), &id, &request.name)
        .await?;
    Ok(Json(WorkspaceView::bare(workspace)))
}

/// Deletes a workspace with its environments and keys.
#[utoipa::path(delete, operation_id = "deleteWorkspace", path = "/v1/workspaces/{id}", tag = "workspaces",
    responses((status = 204), (status = 404, body = ProblemDocument)))]
pub async fn delete(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .store
        .delete_workspace(&who.account_id, &who.actor(), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The workspace's environments.
#[utoipa::path(get, operation_id = "listEnvironments", path = "/v1/workspaces/{id}/environments", tag = "workspaces",
    responses((status = 200, body = List<EnvironmentView>), (status = 404, body = ProblemDocument)))]
pub async fn list_environments(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<List<EnvironmentView>>> {
    state.store.get_workspace(&who.account_id, &id).await?;
    let environments = state.store.list_environments(&who.account_id, &id).await?;
    Ok(Json(List::complete(
        environments.into_iter().map(EnvironmentView::from),
    )))
}

/// Adds an environment to the workspace.
#[utoipa::path(post, operation_id = "createEnvironment", path = "/v1/workspaces/{id}/environments", tag = "workspaces", request_body = EnvironmentSpec,
    responses((status = 201, body = EnvironmentView), (status = 404, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn create_environment(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    invalidation: InvalidationSlot,
    Path(id): Path<String>,
    Body(request): Body<EnvironmentSpec>,
) -> ApiResult<Created<EnvironmentView>> {
    let (name, tag) = validate_environment(&request, "")?;
    let environment = state
        .store
        .create_environment(&who.account_id, &who.actor(), &id, &name, &tag)
        .await?;
    invalidation.only_added();
    Ok(Created(environment.into()))
}
