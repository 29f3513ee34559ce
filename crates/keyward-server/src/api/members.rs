//! Members of the account: who may sign in, with which role and grants.

use super::Created;
use super::views::{List, MemberView};
use crate::AppState;
use crate::auth::{Authorized, ManageMembers, Principal};
use crate::clock::{from_ms, now_ms};
use crate::extract::{Body, Pagination};
use crate::problem::{ApiResult, Problem, ProblemDocument};
use crate::secrets;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_core::KeyHash;
use keyward_core::{AccountPermission, Role, normalize_email};
use keyward_store::{MemberPatch, NewInvitation, NewMember};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
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
#[utoipa::path(get, operation_id = "listMembers", path = "/v1/members", tag = "members",
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

/// How long an invitation link works.
const INVITATION_TTL_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// A one-time link for a new member to choose their password. Shown once:
/// only its hash is stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationView {
    /// Path of the console page that accepts it, e.g. `/invitations/…`;
    /// send the member this link on your server's address.
    pub path: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedMember {
    #[serde(flatten)]
    pub member: MemberView,
    /// Present when the person has no password yet (a new user); people
    /// who already sign in to another account use their password.
    pub invitation: Option<InvitationView>,
}

/// Adds a member. Only owners may add owners. A person new to Keyward gets
/// an invitation link to choose a password (there is no email delivery:
/// pass the link on).
#[utoipa::path(post, operation_id = "addMember", path = "/v1/members", tag = "members", request_body = CreateMember,
    responses((status = 201, body = CreatedMember), (status = 400, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Body(request): Body<CreateMember>,
) -> ApiResult<Created<CreatedMember>> {
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
    let token = secrets::random_token();
    let invitation = NewInvitation {
        hash_hex: KeyHash::of(&token).to_hex(),
        expires_at: now_ms() + INVITATION_TTL_MS,
    };
    let new = NewMember {
        email,
        role: request.role,
        permissions: request.permissions,
    };
    let (member, invitation) = state
        .store
        .invite_member(&who.account_id, &who.actor(), new, invitation)
        .await?;
    let invitation = invitation.map(|i| InvitationView {
        path: format!("/invitations/{token}"),
        expires_at: from_ms(i.expires_at),
    });
    Ok(Created(CreatedMember {
        member: member.into(),
        invitation,
    }))
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
#[utoipa::path(patch, operation_id = "updateMember", path = "/v1/members/{id}", tag = "members", request_body = UpdateMember,
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
#[utoipa::path(delete, operation_id = "removeMember", path = "/v1/members/{id}", tag = "members",
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
