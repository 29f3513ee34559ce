//! Management tokens: bearer credentials for automating the admin API.
//! Each acts for one member and never holds more than that member does.

use super::Created;
use super::views::{List, ManagementTokenView};
use crate::AppState;
use crate::auth::{Authorized, ManageMembers};
use crate::clock::{now_ms, to_ms};
use crate::extract::{Body, Pagination, Timestamp};
use crate::problem::{ApiResult, Problem, ProblemDocument};
use crate::secrets;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_core::{AccountPermission, EnvTag, Secret, validate_display_name};
use keyward_store::NewManagementToken;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

type Auth = Authorized<ManageMembers>;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateManagementToken {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    pub permissions: Vec<AccountPermission>,
    /// The member the token acts for; the caller's own member by default.
    pub member_id: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedManagementToken {
    pub token: ManagementTokenView,
    /// Shown once; only its hash is kept.
    /// `null` in an idempotent replay (`Idempotent-Replayed: true`): the
    /// secret is never stored, so a replay cannot show it again.
    #[serde(serialize_with = "super::views::reveal_once")]
    #[schema(value_type = Option<String>, required = true)]
    pub secret: Secret,
}

/// The account's management tokens.
#[utoipa::path(get, operation_id = "listManagementTokens", path = "/v1/management-tokens", tag = "management-tokens",
    responses((status = 200, body = List<ManagementTokenView>)))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    page: Pagination,
) -> ApiResult<Json<List<ManagementTokenView>>> {
    let tokens = state
        .store
        .list_management_tokens(&who.account_id, None, &page.request())
        .await?;
    Ok(Json(List::from_page(tokens, ManagementTokenView::from)))
}

/// Creates a token for a member, with permissions that member holds.
#[utoipa::path(post, operation_id = "createManagementToken", path = "/v1/management-tokens", tag = "management-tokens", request_body = CreateManagementToken,
    responses((status = 201, body = CreatedManagementToken), (status = 400, body = ProblemDocument), (status = 404, body = ProblemDocument)))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Body(request): Body<CreateManagementToken>,
) -> ApiResult<Created<CreatedManagementToken>> {
    validate_display_name(&request.name).map_err(super::field("name"))?;
    let member_id = request.member_id.unwrap_or_else(|| who.member_id.clone());
    let member = state
        .store
        .get_member(&who.account_id, &member_id)
        .await
        .map_err(|e| Problem::from(e).with_field("member_id"))?;
    let held = member.effective_permissions();
    if let Some(missing) = request.permissions.iter().find(|p| !held.contains(p)) {
        return Err(Problem::invalid(
            "permissions",
            format!(
                "the member does not hold {:?}, so their token cannot",
                missing.as_str()
            ),
        ));
    }
    let expires_at = request.expires_at.map(|t| to_ms(t.0));
    if expires_at.is_some_and(|at| at <= now_ms()) {
        return Err(Problem::invalid("expires_at", "must be in the future"));
    }
    let mut permissions = request.permissions;
    permissions.sort();
    permissions.dedup();
    let secret = secrets::mint(&state.format, &EnvTag::management());
    let token = state
        .store
        .create_management_token(
            &who.account_id,
            &who.actor(),
            NewManagementToken {
                member_id,
                name: request.name,
                hash_hex: secret.hash().to_hex(),
                hint: secret.hint(),
                permissions,
                expires_at,
            },
        )
        .await?;
    Ok(Created(CreatedManagementToken {
        token: token.into(),
        secret,
    }))
}

/// Revokes a token at once.
#[utoipa::path(delete, operation_id = "deleteManagementToken", path = "/v1/management-tokens/{id}", tag = "management-tokens",
    responses((status = 204), (status = 404, body = ProblemDocument)))]
pub async fn delete(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .store
        .delete_management_token(&who.account_id, &who.actor(), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
