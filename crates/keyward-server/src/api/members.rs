//! Members of the account: who may sign in, with which role and grants.

use super::Created;
use super::views::{List, MemberView};
use crate::AppState;
use crate::auth::{Authorized, ManageMembers};
use crate::extract::{Body, Pagination};
use crate::problem::{ApiResult, Problem, ProblemDocument};
use axum::Json;
use axum::extract::State;
use keyward_core::{AccountPermission, Role, normalize_email};
use keyward_store::NewMember;
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
            NewMember {
                email,
                role: request.role,
                permissions: request.permissions,
            },
        )
        .await?;
    Ok(Created(member.into()))
}
