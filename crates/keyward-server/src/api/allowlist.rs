//! The account's IP allowlist (seed 001): each entry lets an address or range
//! reach the workspaces it names; a workspace with entries refuses every
//! other address, even with a valid key.

use super::views::{AllowlistEntryView, List};
use super::{Created, field};
use crate::AppState;
use crate::auth::{Authorized, ManageCredentials};
use crate::extract::Body;
use crate::problem::{ApiResult, Problem, ProblemDocument};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_core::ip;
use keyward_store::NewAllowlistEntry;
use serde::Deserialize;
use utoipa::ToSchema;

type Auth = Authorized<ManageCredentials>;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAllowlistEntry {
    /// `203.0.113.7` or `10.0.0.0/8`.
    pub address: String,
    /// The workspaces this address may reach.
    pub workspace_ids: Vec<String>,
    pub description: Option<String>,
}

/// Every entry of the account.
#[utoipa::path(get, operation_id = "listAllowedAddresses", path = "/v1/ip-allowlist", tag = "ip-allowlist",
    responses((status = 200, body = List<AllowlistEntryView>)))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
) -> ApiResult<Json<List<AllowlistEntryView>>> {
    let entries = state.store.list_allowlist(&who.account_id).await?;
    Ok(Json(List::complete(
        entries.into_iter().map(AllowlistEntryView::from),
    )))
}

/// Allows an address or range to reach some workspaces.
#[utoipa::path(post, operation_id = "addAllowedAddress", path = "/v1/ip-allowlist", tag = "ip-allowlist", request_body = CreateAllowlistEntry,
    responses((status = 201, body = AllowlistEntryView), (status = 400, body = ProblemDocument), (status = 404, body = ProblemDocument)))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Body(request): Body<CreateAllowlistEntry>,
) -> ApiResult<Created<AllowlistEntryView>> {
    let cidr = ip::parse_rule(&request.address).map_err(field("address"))?;
    if request.workspace_ids.is_empty() || request.workspace_ids.len() > 100 {
        return Err(Problem::invalid(
            "workspace_ids",
            "name 1 to 100 workspaces",
        ));
    }
    if request
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 200)
    {
        return Err(Problem::invalid("description", "at most 200 characters"));
    }
    let mut workspace_ids = request.workspace_ids;
    workspace_ids.sort();
    workspace_ids.dedup();
    let entry = state
        .store
        .create_allowlist_entry(
            &who.account_id,
            &who.actor(),
            NewAllowlistEntry {
                cidr,
                description: request.description,
                workspace_ids,
            },
        )
        .await?;
    Ok(Created(entry.into()))
}

/// Removes an entry.
#[utoipa::path(delete, operation_id = "removeAllowedAddress", path = "/v1/ip-allowlist/{id}", tag = "ip-allowlist",
    responses((status = 204), (status = 404, body = ProblemDocument)))]
pub async fn delete(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .store
        .delete_allowlist_entry(&who.account_id, &who.actor(), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
