//! Integrations (seeds 000, 002): which credentials each consumer of a
//! workspace uses — the JavaScript snippet, a server, a Segment connection.
//! Moving an integration to a new key is how a rotation completes safely.

use super::views::List;
use super::{Created, field};
use crate::AppState;
use crate::auth::{Authorized, ManageCredentials};
use crate::clock::from_ms;
use crate::extract::Body;
use crate::problem::{ApiResult, ProblemDocument};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_core::{IntegrationKind, validate_display_name};
use keyward_store::{Integration, IntegrationPatch, NewIntegration};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

type Auth = Authorized<ManageCredentials>;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIntegration {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    pub kind: IntegrationKind,
    /// The key it uses: a publishable key for `javascript_snippet`, an ingest
    /// key for `segment`, any key otherwise; from the same workspace.
    pub key_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateIntegration {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// Move the integration to another key of its workspace.
    pub key_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationView {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub kind: IntegrationKind,
    /// `null` once a forced delete removed its key: choose another.
    pub key_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// For `javascript_snippet` integrations, on single reads: ready to
    /// paste into a page. It carries public credentials only (the Site ID
    /// and the publishable key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snippet: Option<String>,
}

impl IntegrationView {
    fn new(i: Integration, snippet: Option<String>) -> Self {
        Self {
            id: i.id,
            workspace_id: i.workspace_id,
            name: i.name,
            kind: i.kind,
            key_id: i.key_id,
            created_at: from_ms(i.created_at),
            updated_at: from_ms(i.updated_at),
            snippet,
        }
    }
}

/// The view with its snippet, for single reads.
async fn detailed(
    state: &AppState,
    account: &str,
    integration: Integration,
) -> ApiResult<IntegrationView> {
    let snippet = match (&integration.kind, &integration.key_id) {
        (IntegrationKind::JavascriptSnippet, Some(key_id)) => {
            let key = state.store.get_key(account, key_id).await?;
            key.public_value
                .map(|public| snippet(&key.id, &public, &key.environment))
        }
        _ => None,
    };
    Ok(IntegrationView::new(integration, snippet))
}

fn snippet(site_id: &str, publishable_key: &str, environment: &str) -> String {
    let config = serde_json::json!({
        "siteId": site_id,
        "publishableKey": publishable_key,
        "environment": environment,
    });
    format!("<script>\n  window.keywardConfig = {config};\n</script>")
}

/// The workspace's integrations.
#[utoipa::path(get, operation_id = "listIntegrations", path = "/v1/workspaces/{id}/integrations", tag = "integrations",
    responses((status = 200, body = List<IntegrationView>), (status = 404, body = ProblemDocument)))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(workspace): Path<String>,
) -> ApiResult<Json<List<IntegrationView>>> {
    let integrations = state
        .store
        .list_integrations(&who.account_id, &workspace)
        .await?;
    Ok(Json(List::complete(
        integrations
            .into_iter()
            .map(|i| IntegrationView::new(i, None)),
    )))
}

/// Records which key an integration uses.
#[utoipa::path(post, operation_id = "createIntegration", path = "/v1/workspaces/{id}/integrations", tag = "integrations", request_body = CreateIntegration,
    responses((status = 201, body = IntegrationView), (status = 400, body = ProblemDocument), (status = 404, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(workspace_id): Path<String>,
    Body(request): Body<CreateIntegration>,
) -> ApiResult<Created<IntegrationView>> {
    validate_display_name(&request.name).map_err(field("name"))?;
    let new = NewIntegration {
        workspace_id,
        name: request.name,
        kind: request.kind,
        key_id: request.key_id,
    };
    let created = state
        .store
        .create_integration(&who.account_id, &who.actor(), new)
        .await?;
    Ok(Created(detailed(&state, &who.account_id, created).await?))
}

/// One integration; a JavaScript snippet's includes the code to paste.
#[utoipa::path(get, operation_id = "getIntegration", path = "/v1/integrations/{id}", tag = "integrations",
    responses((status = 200, body = IntegrationView), (status = 404, body = ProblemDocument)))]
pub async fn get(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<IntegrationView>> {
    let integration = state.store.get_integration(&who.account_id, &id).await?;
    Ok(Json(detailed(&state, &who.account_id, integration).await?))
}

/// Renames an integration or moves it to another key.
#[utoipa::path(patch, operation_id = "updateIntegration", path = "/v1/integrations/{id}", tag = "integrations", request_body = UpdateIntegration,
    responses((status = 200, body = IntegrationView), (status = 400, body = ProblemDocument), (status = 404, body = ProblemDocument)))]
pub async fn update(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
    Body(request): Body<UpdateIntegration>,
) -> ApiResult<Json<IntegrationView>> {
    if let Some(name) = &request.name {
        validate_display_name(name).map_err(field("name"))?;
    }
    let patch = IntegrationPatch {
        name: request.name,
        key_id: request.key_id,
    };
    let updated = state
        .store
        .update_integration(&who.account_id, &who.actor(), &id, patch)
        .await?;
    Ok(Json(detailed(&state, &who.account_id, updated).await?))
}

/// Removes an integration (its key stays).
#[utoipa::path(delete, operation_id = "deleteIntegration", path = "/v1/integrations/{id}", tag = "integrations",
    responses((status = 204), (status = 404, body = ProblemDocument)))]
pub async fn delete(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .store
        .delete_integration(&who.account_id, &who.actor(), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
