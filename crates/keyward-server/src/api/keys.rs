//! API keys: issue, list, inspect, update, disable / enable, revoke.

use super::views::{KeyView, List};
use super::{Created, field};
use crate::AppState;
use crate::auth::{Authorized, ManageCredentials, Principal};
use crate::clock::{now_ms, to_ms};
use crate::extract::{Body, Pagination, Timestamp, double_option, serde_urlencoded_query};
use crate::problem::{ApiResult, Problem, ProblemDocument};
use crate::secrets;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::Uri;
use ipnet::IpNet;
use keyward_core::{
    EnvTag, KeyKind, KeyStatus, PermissionName, RateLimitPolicy, ip, validate_customer_id,
    validate_display_name, validate_environment_name,
};
use keyward_store::{KeyFilter, KeyPatch, NewKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

type Auth = Authorized<ManageCredentials>;

const MAX_PERMISSIONS: usize = 100;
const MAX_ALLOWED_IPS: usize = 100;
const MAX_META_BYTES: usize = 4096;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Unique within the workspace, e.g. "Main Website Integration".
    pub name: String,
    /// The environment's name; the key works there only.
    pub environment: String,
    #[serde(default)]
    pub kind: KeyKind,
    /// From the account's permission catalog; none by default (least privilege).
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub permissions: Vec<PermissionName>,
    pub rate_limit: Option<RateLimitPolicy>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    /// The key acts only for this customer of the platform.
    pub customer_id: Option<String>,
    /// Addresses or CIDR ranges, on top of the workspace allowlist.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// A small JSON object returned on every successful verification.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub meta: Map<String, Value>,
}

/// Fields left out are unchanged; `null` clears an optional field.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    pub name: Option<String>,
    #[schema(value_type = Option<Vec<String>>)]
    pub permissions: Option<Vec<PermissionName>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<RateLimitPolicy>)]
    pub rate_limit: Option<Option<RateLimitPolicy>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<Timestamp>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub customer_id: Option<Option<String>>,
    pub allowed_ips: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Map<String, Value>>,
}

/// A new key and its secret — the only time the secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub key: KeyView,
    /// Store it now: Keyward keeps only its hash.
    pub secret: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyQuery {
    environment: Option<String>,
    status: Option<String>,
    #[serde(rename = "limit")]
    _limit: Option<String>,
    #[serde(rename = "cursor")]
    _cursor: Option<String>,
}

fn validate_permissions(mut permissions: Vec<PermissionName>) -> ApiResult<Vec<PermissionName>> {
    if permissions.len() > MAX_PERMISSIONS {
        return Err(Problem::invalid(
            "permissions",
            format!("at most {MAX_PERMISSIONS} permissions"),
        ));
    }
    permissions.sort();
    permissions.dedup();
    Ok(permissions)
}

fn parse_allowed_ips(entries: &[String]) -> ApiResult<Vec<IpNet>> {
    if entries.len() > MAX_ALLOWED_IPS {
        return Err(Problem::invalid(
            "allowed_ips",
            format!("at most {MAX_ALLOWED_IPS} entries"),
        ));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| ip::parse_rule(entry).map_err(field(format!("allowed_ips[{i}]"))))
        .collect()
}

fn validate_rate_limit(policy: &RateLimitPolicy) -> ApiResult<()> {
    policy
        .validate()
        .map_err(|(sub, e)| Problem::invalid(format!("rate_limit.{sub}"), e.message))
}

fn validate_expiry(at: Timestamp) -> ApiResult<i64> {
    let ms = to_ms(at.0);
    if ms <= now_ms() {
        return Err(Problem::invalid("expires_at", "must be in the future"));
    }
    Ok(ms)
}

fn validate_customer(customer_id: &str) -> ApiResult<()> {
    validate_customer_id(customer_id).map_err(field("customer_id"))
}

fn validate_meta(meta: &Map<String, Value>) -> ApiResult<()> {
    let size = serde_json::to_vec(meta)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_META_BYTES {
        return Err(Problem::invalid(
            "meta",
            format!("at most {MAX_META_BYTES} bytes of JSON"),
        ));
    }
    Ok(())
}

/// Finds the tag the key's environment puts in its secrets.
async fn environment_tag(
    state: &AppState,
    account: &str,
    workspace: &str,
    environment: &str,
) -> ApiResult<EnvTag> {
    validate_environment_name(environment).map_err(field("environment"))?;
    state
        .store
        .list_environments(account, workspace)
        .await?
        .into_iter()
        .find(|e| e.name == environment)
        .and_then(|e| EnvTag::parse_environment_tag(&e.tag).ok())
        .ok_or_else(|| Problem::not_found("environment").with_field("environment"))
}

/// Lists a workspace's keys, optionally filtered by environment and status.
#[utoipa::path(get, path = "/v1/workspaces/{id}/keys", tag = "keys",
    params(("environment" = Option<String>, Query), ("status" = Option<KeyStatus>, Query),
           ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = List<KeyView>), (status = 404, body = ProblemDocument)))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(workspace): Path<String>,
    uri: Uri,
    page: Pagination,
) -> ApiResult<Json<List<KeyView>>> {
    let query: KeyQuery = serde_urlencoded_query(uri.query())?;
    let status = query
        .status
        .as_deref()
        .map(KeyStatus::parse)
        .transpose()
        .map_err(field("status"))?;
    if let Some(env) = &query.environment {
        validate_environment_name(env).map_err(field("environment"))?;
    }
    state
        .store
        .get_workspace(&who.account_id, &workspace)
        .await?;
    let filter = KeyFilter {
        workspace_id: Some(workspace),
        environment: query.environment,
        status,
    };
    let keys = state
        .store
        .list_keys(&who.account_id, &filter, &page.request())
        .await?;
    let now = now_ms();
    Ok(Json(List::from_page(keys, |k| KeyView::new(k, now))))
}

/// Issues a key. The response carries the secret; it is never shown again.
#[utoipa::path(post, path = "/v1/workspaces/{id}/keys", tag = "keys", request_body = CreateKey,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = CreatedKey), (status = 400, body = ProblemDocument), (status = 404, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(workspace): Path<String>,
    Body(request): Body<CreateKey>,
) -> ApiResult<Created<CreatedKey>> {
    let new = validated_new_key(&who, workspace, request)?;
    let tag = environment_tag(&state, &who.account_id, &new.workspace_id, &new.environment).await?;
    let secret = secrets::mint(&state.format, &tag);
    let new = NewKey {
        hash_hex: secret.hash().to_hex(),
        hint: secret.hint(),
        ..new
    };
    let key = state.store.create_key(&who.account_id, new).await?;
    Ok(Created(CreatedKey {
        key: KeyView::new(key, now_ms()),
        secret: secret.expose().to_owned(),
    }))
}

/// Everything of a create request but the secret, checked.
fn validated_new_key(who: &Principal, workspace_id: String, r: CreateKey) -> ApiResult<NewKey> {
    validate_display_name(&r.name).map_err(field("name"))?;
    validate_environment_name(&r.environment).map_err(field("environment"))?;
    if let Some(policy) = &r.rate_limit {
        validate_rate_limit(policy)?;
    }
    if let Some(customer) = &r.customer_id {
        validate_customer(customer)?;
    }
    validate_meta(&r.meta)?;
    Ok(NewKey {
        workspace_id,
        environment: r.environment,
        kind: r.kind,
        name: r.name,
        hash_hex: String::new(),
        hint: String::new(),
        permissions: validate_permissions(r.permissions)?,
        customer_id: r.customer_id,
        rate_limit: r.rate_limit,
        allowed_ips: parse_allowed_ips(&r.allowed_ips)?,
        expires_at: r.expires_at.map(validate_expiry).transpose()?,
        meta: r.meta,
        created_by: Some(who.member_id.clone()),
    })
}

/// One key.
#[utoipa::path(get, path = "/v1/keys/{id}", tag = "keys",
    responses((status = 200, body = KeyView), (status = 404, body = ProblemDocument)))]
pub async fn get(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyView>> {
    let key = state.store.get_key(&who.account_id, &id).await?;
    Ok(Json(KeyView::new(key, now_ms())))
}

/// Changes a key's name, permissions, rate limit, expiry, customer, allowed IPs or meta.
#[utoipa::path(patch, path = "/v1/keys/{id}", tag = "keys", request_body = UpdateKey,
    responses((status = 200, body = KeyView), (status = 400, body = ProblemDocument), (status = 404, body = ProblemDocument)))]
pub async fn update(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
    Body(request): Body<UpdateKey>,
) -> ApiResult<Json<KeyView>> {
    let patch = validated_patch(request)?;
    let key = state.store.update_key(&who.account_id, &id, patch).await?;
    Ok(Json(KeyView::new(key, now_ms())))
}

fn validated_patch(r: UpdateKey) -> ApiResult<KeyPatch> {
    if let Some(name) = &r.name {
        validate_display_name(name).map_err(field("name"))?;
    }
    if let Some(Some(policy)) = &r.rate_limit {
        validate_rate_limit(policy)?;
    }
    if let Some(Some(customer)) = &r.customer_id {
        validate_customer(customer)?;
    }
    if let Some(meta) = &r.meta {
        validate_meta(meta)?;
    }
    Ok(KeyPatch {
        name: r.name,
        permissions: r.permissions.map(validate_permissions).transpose()?,
        customer_id: r.customer_id,
        rate_limit: r.rate_limit,
        allowed_ips: r
            .allowed_ips
            .as_deref()
            .map(parse_allowed_ips)
            .transpose()?,
        expires_at: r
            .expires_at
            .map(|e| e.map(validate_expiry).transpose())
            .transpose()?,
        meta: r.meta,
    })
}

async fn set_status(
    state: &AppState,
    who: &Principal,
    id: &str,
    status: KeyStatus,
) -> ApiResult<Json<KeyView>> {
    let key = state
        .store
        .set_key_status(&who.account_id, id, status)
        .await?;
    Ok(Json(KeyView::new(key, now_ms())))
}

/// Disables a key (status `inactive`); reversible with enable.
#[utoipa::path(post, path = "/v1/keys/{id}/disable", tag = "keys",
    responses((status = 200, body = KeyView), (status = 404, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn disable(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyView>> {
    set_status(&state, &who, &id, KeyStatus::Inactive).await
}

/// Re-enables a disabled key.
#[utoipa::path(post, path = "/v1/keys/{id}/enable", tag = "keys",
    responses((status = 200, body = KeyView), (status = 404, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn enable(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyView>> {
    set_status(&state, &who, &id, KeyStatus::Active).await
}

/// Revokes a key for good; its history stays.
#[utoipa::path(post, path = "/v1/keys/{id}/revoke", tag = "keys",
    responses((status = 200, body = KeyView), (status = 404, body = ProblemDocument)))]
pub async fn revoke(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyView>> {
    set_status(&state, &who, &id, KeyStatus::Revoked).await
}
