//! Members of the account: who may sign in, with which role and grants.

use super::Created;
use super::views::{List, MemberView};
use crate::AppState;
use crate::auth::{Authorized, ManageMembers, Principal};
use crate::extract::{Body, Pagination};
use crate::problem::{ApiResult, Problem, ProblemDocument};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_core::{AccountPermission, Role, normalize_email};
use keyward_store::{MemberPatch, NewMember};
use serde::Deserialize;
use utoipa::ToSchema;

type Auth = Authorized<ManageMembers>;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMember {
    pub email: String,
    pub role: Role,
    /// Grants for a plain member, e.g. `manage_api_credentials`.
    #[serde(default)]
    pub permissions: Vec<AccountPermission>,
}

/// The account's members.
#[utoipa::path(get, path = "/v1/members", tag = "members",
    responses((status = 200, body = List<MemberView>)))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    page: Pagination,
) -> ApiResult<Json<List<MemberView>>> {
    let members = state
        .store
        .list_members(&who.account_id, &page.request())
        .await?;
    Ok(Json(List::from_page(members, MemberView::from)))
}

/// Adds a member. Only owners may add owners.
#[utoipa::path(post, path = "/v1/members", tag = "members", request_body = CreateMember,
    responses((status = 201, body = MemberView), (status = 400, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Body(request): Body<CreateMember>,
) -> ApiResult<Created<MemberView>> {
    let email = normalize_email(&request.email).map_err(super::field("email"))?;
    if request.role == Role::Owner {
        let me = state
            .store
            .get_member(&who.account_id, &who.member_id)
            .await?;
        if me.role != Role::Owner {
            return Err(
                Problem::forbidden("only an owner may add another owner").with_field("role")
            );
        }
    }
    if request.role != Role::Member && !request.permissions.is_empty() {
        return Err(Problem::invalid(
            "permissions",
            "owners and admins hold every permission; grant permissions to members only",
        ));
    }
    let member = state
        .store
        .create_member(
            &who.account_id,
            &who.actor(),
            NewMember {
                email,
                role: request.role,
                permissions: request.permissions,
            },
        )
        .await?;
    Ok(Created(member.into()))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    pub role: Option<Role>,
    /// Replaces the grants; members only (owners and admins hold every
    /// permission, and changing a member to either clears their grants).
    pub permissions: Option<Vec<AccountPermission>>,
}

/// Refuses unless the caller is an owner. Only owners may make or unmake
/// owners: anyone else could otherwise take the account over.
async fn require_owner(state: &AppState, who: &Principal, action: &str) -> ApiResult<()> {
    let me = state
        .store
        .get_member(&who.account_id, &who.member_id)
        .await?;
    if me.role == Role::Owner {
        Ok(())
    } else {
        Err(Problem::forbidden(format!("only an owner may {action}")).with_field("role"))
    }
}

/// Changes a member's role or grants. Only owners may grant or remove the
/// owner role; the account's last owner cannot be demoted (409
/// `last_owner`). A member's management tokens follow at once: they never
/// hold more than the member does.
#[utoipa::path(patch, path = "/v1/members/{id}", tag = "members", request_body = UpdateMember,
    responses((status = 200, body = MemberView), (status = 400, body = ProblemDocument),
              (status = 403, body = ProblemDocument), (status = 404, body = ProblemDocument),
              (status = 409, body = ProblemDocument)))]
pub async fn update(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
    Body(request): Body<UpdateMember>,
) -> ApiResult<Json<MemberView>> {
    let target = state.store.get_member(&who.account_id, &id).await?;
    let new_role = request.role.unwrap_or(target.role);
    if new_role != target.role && (target.role == Role::Owner || new_role == Role::Owner) {
        require_owner(&state, &who, "grant or remove the owner role").await?;
    }
    let member = state
        .store
        .update_member(
            &who.account_id,
            &who.actor(),
            &id,
            MemberPatch {
                role: request.role,
                permissions: request.permissions,
            },
        )
        .await?;
    Ok(Json(member.into()))
}

/// Removes a member from the account; their management tokens stop working
/// at once. Only owners may remove an owner, and the last owner cannot be
/// removed (409 `last_owner`).
#[utoipa::path(delete, path = "/v1/members/{id}", tag = "members",
    responses((status = 204), (status = 403, body = ProblemDocument),
              (status = 404, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn delete(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let target = state.store.get_member(&who.account_id, &id).await?;
    if target.role == Role::Owner {
        require_owner(&state, &who, "remove an owner").await?;
    }
    state
        .store
        .delete_member(&who.account_id, &who.actor(), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
