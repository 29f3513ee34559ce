//! The account's permission catalog: the names keys may hold.

use super::views::{List, PermissionView};
use super::{Created, field};
use crate::AppState;
use crate::auth::{Authorized, ManageCredentials};
use crate::extract::Body;
use crate::problem::{ApiResult, Problem, ProblemDocument};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_core::PermissionName;
use serde::Deserialize;
use utoipa::ToSchema;

type Auth = Authorized<ManageCredentials>;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePermission {
    /// `resource:action`, e.g. `customers:read`.
    #[schema(value_type = String, example = "customers:read")]
    pub name: PermissionName,
    pub description: Option<String>,
}

/// The catalog.
#[utoipa::path(get, operation_id = "listPermissions", path = "/v1/permissions", tag = "permissions",
    responses((status = 200, body = List<PermissionView>)))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
) -> ApiResult<Json<List<PermissionView>>> {
    let permissions = state.store.list_permissions(&who.account_id).await?;
    Ok(Json(List::complete(
        permissions.into_iter().map(PermissionView::from),
    )))
}

/// Adds a permission to the catalog.
#[utoipa::path(post, operation_id = "createPermission", path = "/v1/permissions", tag = "permissions", request_body = CreatePermission,
    responses((status = 201, body = PermissionView), (status = 409, body = ProblemDocument)))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Body(request): Body<CreatePermission>,
) -> ApiResult<Created<PermissionView>> {
    if request
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 500)
    {
        return Err(Problem::invalid("description", "at most 500 characters"));
    }
    let created = state
        .store
        .create_permission(
            &who.account_id,
            &who.actor(),
            request.name.as_str(),
            request.description.as_deref(),
        )
        .await?;
    Ok(Created(created.into()))
}

/// Removes a permission no key holds.
#[utoipa::path(delete, operation_id = "deletePermission", path = "/v1/permissions/{name}", tag = "permissions",
    responses((status = 204),
        (status = 400, body = ProblemDocument, description = "`name` is not a permission name."),
        (status = 404, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn delete(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    PermissionName::parse(&name).map_err(field("name"))?;
    state
        .store
        .delete_permission(&who.account_id, &who.actor(), &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
