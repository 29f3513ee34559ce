//! API keys: issue, list, inspect, update, disable / enable, revoke.

use super::views::{CreatedKey, KeyLeakView, KeyView, List};
use super::{Created, field};
use crate::AppState;
use crate::auth::{Authorized, ManageCredentials, Principal};
use crate::clock::{now_ms, to_ms};
use crate::extract::{
    Body, OptionalBody, Pagination, Timestamp, double_option, parse_item, serde_urlencoded_query,
};
use crate::invalidate::InvalidationSlot;
use crate::problem::{ApiResult, Problem, ProblemDocument};
use crate::secrets;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use ipnet::IpNet;
use keyward_core::credits::check_amount;
use keyward_core::key::IMPORTED_SECRET_LEN;
use keyward_core::{
    CreditRefill, EnvTag, InvalidValue, KeyHash, KeyKind, KeyStatus, PermissionName,
    RateLimitPolicy, ip, normalize_origin, validate_customer_id, validate_display_name,
    validate_environment_name,
};
use keyward_store::{
    CreditChange, CreditSetting, KeyDeletion, KeyFilter, KeyPatch, KeyReplacement, NewKey,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

type Auth = Authorized<ManageCredentials>;

const MAX_PERMISSIONS: usize = 100;
const MAX_ALLOWED_IPS: usize = 100;
const MAX_META_BYTES: usize = 4096;
const MAX_ORIGINS: usize = 20;
pub(super) const MAX_GRACE_SECONDS: u32 = 7 * 24 * 60 * 60;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Unique within the workspace, e.g. "Main Website Integration".
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// The environment's name; the key works there only.
    #[schema(pattern = "^[a-z][a-z0-9-]{0,31}$")]
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
    /// Publishable keys only, and required for them: the web origins
    /// (`https://shop.example`) allowed to present the key.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Meters the key: each valid verification takes its cost from the
    /// balance; once it cannot cover a request's cost, the key answers
    /// `rate_limited` (429) with `credits.remaining` saying why.
    pub credits: Option<CreditsRequest>,
}

/// A key's usage credits.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditsRequest {
    /// The balance to start from.
    pub remaining: u64,
    /// Sets the balance back to `amount` every day, or every month on `day`.
    pub refill: Option<CreditRefill>,
}

/// Exactly one of `add` and `set`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeCredits {
    /// Added to the balance (after any refill due); negative takes away,
    /// never below 0.
    pub add: Option<i64>,
    /// The new balance.
    pub set: Option<u64>,
}

/// Fields left out are unchanged; `null` clears an optional field.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    #[schema(min_length = 1, max_length = 100)]
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
    /// Publishable keys only.
    pub allowed_origins: Option<Vec<String>>,
    /// Sets the balance and refill anew; `null` stops metering the key.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<CreditsRequest>)]
    pub credits: Option<Option<CreditsRequest>>,
}

#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the replaced secret keeps working: 0 (the default) stops it
    /// at once; at most 604800 (7 days).
    #[serde(default)]
    pub grace_seconds: u32,
}

#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RevokeKey {
    /// Revoke although integrations still use the key.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteKey {
    /// The key's name, repeated: deleting cannot be undone.
    pub confirm_name: String,
    /// Delete although integrations still use the key (they are left without one).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyQuery {
    environment: Option<String>,
    status: Option<String>,
    kind: Option<String>,
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

fn normalize_origins(origins: &[String]) -> ApiResult<Vec<String>> {
    if origins.len() > MAX_ORIGINS {
        return Err(Problem::invalid(
            "allowed_origins",
            format!("at most {MAX_ORIGINS} origins"),
        ));
    }
    let mut normalized = origins
        .iter()
        .enumerate()
        .map(|(i, o)| normalize_origin(o).map_err(field(format!("allowed_origins[{i}]"))))
        .collect::<ApiResult<Vec<_>>>()?;
    normalized.sort();
    normalized.dedup();
    Ok(normalized)
}

/// What each kind may carry (seed 001): ingest and publishable keys travel in
/// client code, so they hold only ingest-class permissions; only publishable
/// keys have (and must have) an origin list.
fn check_kind_rules(
    kind: KeyKind,
    permissions: &[PermissionName],
    origins: &[String],
) -> ApiResult<()> {
    let client_side = kind != KeyKind::Secret;
    if let Some(p) = permissions
        .iter()
        .find(|p| client_side && !p.is_ingest_class())
    {
        return Err(Problem::invalid(
            "permissions",
            format!(
                "{} keys hold only ingest permissions (…:write, …:track, …:ingest), not {p}",
                kind.as_str()
            ),
        ));
    }
    match (kind, origins.is_empty()) {
        (KeyKind::Publishable, true) => Err(Problem::invalid(
            "allowed_origins",
            "a publishable key needs the web origins allowed to use it",
        )),
        (KeyKind::Secret | KeyKind::Ingest, false) => Err(Problem::invalid(
            "allowed_origins",
            "only publishable keys have allowed origins; use allowed_ips for servers",
        )),
        _ => Ok(()),
    }
}

fn validate_rate_limit(policy: &RateLimitPolicy) -> ApiResult<()> {
    policy
        .validate()
        .map_err(|(sub, e)| Problem::invalid(format!("rate_limit.{sub}"), e.message))
}

fn validate_credits(r: CreditsRequest) -> ApiResult<CreditSetting> {
    check_amount(r.remaining).map_err(field("credits.remaining"))?;
    if let Some(refill) = &r.refill {
        refill
            .validate()
            .map_err(|(sub, e)| Problem::invalid(format!("credits.refill.{sub}"), e.message))?;
    }
    Ok(CreditSetting {
        remaining: r.remaining,
        refill: r.refill,
    })
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
#[utoipa::path(get, operation_id = "listKeys", path = "/v1/workspaces/{id}/keys", tag = "keys",
    params(("environment" = Option<String>, Query), ("status" = Option<KeyStatus>, Query),
           ("kind" = Option<KeyKind>, Query),
           crate::extract::PageQuery),
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
    let kind = query
        .kind
        .as_deref()
        .map(KeyKind::parse)
        .transpose()
        .map_err(field("kind"))?;
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
        kind,
    };
    let keys = state
        .store
        .list_keys(&who.account_id, &filter, &page.request())
        .await?;
    let now = now_ms();
    Ok(Json(List::from_page(keys, |k| KeyView::new(k, now))))
}

/// Issues a key. The response carries the secret; it is never shown again.
#[utoipa::path(post, operation_id = "createKey", path = "/v1/workspaces/{id}/keys", tag = "keys", request_body = CreateKey,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = CreatedKey), (status = 400, body = ProblemDocument), (status = 404, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    invalidation: InvalidationSlot,
    Path(workspace): Path<String>,
    Body(request): Body<CreateKey>,
) -> ApiResult<Created<CreatedKey>> {
    let new = validated_new_key(&who, workspace, request)?;
    let tag = environment_tag(&state, &who.account_id, &new.workspace_id, &new.environment).await?;
    let secret = secrets::mint(&state.format, &tag);
    let public_value = (new.kind == KeyKind::Publishable).then(|| secret.expose().to_owned());
    let new = NewKey {
        hash_hex: secret.hash().to_hex(),
        hint: secret.hint(),
        public_value,
        ..new
    };
    let key = state
        .store
        .create_key(&who.account_id, &who.actor(), new)
        .await?;
    invalidation.only_added();
    Ok(Created(CreatedKey {
        key: KeyView::new(key, now_ms()),
        secret,
    }))
}

/// The most keys one import takes: all are created in one transaction.
const MAX_IMPORTED_KEYS: usize = 1000;
/// An imported key's hint: its first characters, never the whole key —
/// shorter than the shortest secret verification looks up as imported.
const MAX_IMPORTED_HINT_CHARS: usize = 12;
const _: () = assert!(MAX_IMPORTED_HINT_CHARS < *IMPORTED_SECRET_LEN.start());

/// Keys issued by another system, moved in by their hashes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportKeys {
    /// 1 to 1000 keys, created all or none.
    #[schema(value_type = Vec<ImportedKey>)]
    keys: Vec<Map<String, Value>>,
}

/// One key issued elsewhere: its hash, then the fields of a new key.
/// (`Deserialize` only describes the flattened shape to the schema: the
/// handler reads each item itself, see [`imported_key`], so that unknown
/// fields are still refused.)
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImportedKey {
    /// SHA-256 of the whole key exactly as clients send it: 64 hex digits,
    /// or its 32 bytes in base64 (as Unkey exports them).
    hash: String,
    /// The key's first characters (`sk_live_4f`), at most 12, shown as
    /// `sk_live_4f…` to tell keys apart. Never the whole key.
    hint: Option<String>,
    #[serde(flatten)]
    key: CreateKey,
}

/// Creates keys issued by another system from their hashes, so its
/// clients keep their keys when the platform moves to Keyward. The
/// deployment must verify imported keys (`--accept-imported-keys`).
#[utoipa::path(post, operation_id = "importKeys", path = "/v1/workspaces/{id}/keys/import", tag = "keys",
    request_body = ImportKeys,
    responses((status = 201, body = List<KeyView>), (status = 400, body = ProblemDocument),
        (status = 404, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn import(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    invalidation: InvalidationSlot,
    Path(workspace): Path<String>,
    Body(request): Body<ImportKeys>,
) -> ApiResult<Created<List<KeyView>>> {
    if !state.accept_imported_keys {
        return Err(Problem::conflict(
            "imports_disabled",
            "this deployment does not verify imported keys; start it with --accept-imported-keys",
        ));
    }
    if request.keys.is_empty() || request.keys.len() > MAX_IMPORTED_KEYS {
        return Err(Problem::invalid(
            "keys",
            format!("must hold 1 to {MAX_IMPORTED_KEYS} keys; import more in several requests"),
        ));
    }
    let mut new = Vec::with_capacity(request.keys.len());
    for (index, item) in request.keys.into_iter().enumerate() {
        let item_path = format!("keys[{index}]");
        let imported = imported_key(item, &item_path)?;
        new.push(imported_new_key(&who, &workspace, imported).map_err(|p| p.within(&item_path))?);
    }
    let keys = state
        .store
        .import_keys(&who.account_id, &who.actor(), new)
        .await?;
    invalidation.only_added();
    let now = now_ms();
    Ok(Created(List::complete(
        keys.into_iter().map(|k| KeyView::new(k, now)),
    )))
}

/// The item's `hash` and `hint`, then the rest as a [`CreateKey`], which
/// refuses fields it does not know.
fn imported_key(mut item: Map<String, Value>, item_path: &str) -> ApiResult<ImportedKey> {
    let text = |value: Option<Value>, name: &str| match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(Problem::invalid(
            format!("{item_path}.{name}"),
            "must be a string",
        )),
    };
    let hash = text(item.remove("hash"), "hash")?
        .ok_or_else(|| Problem::invalid(format!("{item_path}.hash"), "is required"))?;
    let hint = text(item.remove("hint"), "hint")?;
    let key = parse_item(Value::Object(item), item_path)?;
    Ok(ImportedKey { hash, hint, key })
}

fn imported_new_key(who: &Principal, workspace: &str, imported: ImportedKey) -> ApiResult<NewKey> {
    if imported.key.kind == KeyKind::Publishable {
        return Err(Problem::invalid(
            "kind",
            "a publishable key is public by design: issue a new one rather than import it",
        ));
    }
    let hash = imported_hash(&imported.hash).map_err(field("hash"))?;
    let hint = imported_hint(imported.hint.as_deref()).map_err(field("hint"))?;
    let new = validated_new_key(who, workspace.to_owned(), imported.key)?;
    Ok(NewKey {
        hash_hex: hash.to_hex(),
        hint,
        ..new
    })
}

/// SHA-256 as 64 hex digits (either case) or as base64 of its 32 bytes.
fn imported_hash(text: &str) -> Result<KeyHash, InvalidValue> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    if text.len() == 64 {
        return KeyHash::from_hex(&text.to_ascii_lowercase());
    }
    let decoded = STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text));
    match decoded
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
    {
        Some(bytes) => Ok(KeyHash::from_bytes(bytes)),
        None => Err(InvalidValue::new(
            "must be the key's SHA-256: 64 hex digits, or its 32 bytes in base64",
        )),
    }
}

fn imported_hint(hint: Option<&str>) -> Result<String, InvalidValue> {
    let Some(hint) = hint else {
        return Ok("imported…".to_owned());
    };
    let fits = !hint.is_empty() && hint.chars().count() <= MAX_IMPORTED_HINT_CHARS;
    if !fits || !hint.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidValue::new(format!(
            "must be the key's first 1 to {MAX_IMPORTED_HINT_CHARS} printable characters, never the whole key"
        )));
    }
    Ok(format!("{hint}…"))
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
    let permissions = validate_permissions(r.permissions)?;
    let allowed_origins = normalize_origins(&r.allowed_origins)?;
    check_kind_rules(r.kind, &permissions, &allowed_origins)?;
    Ok(NewKey {
        workspace_id,
        environment: r.environment,
        kind: r.kind,
        name: r.name,
        hash_hex: String::new(),
        hint: String::new(),
        permissions,
        customer_id: r.customer_id,
        rate_limit: r.rate_limit,
        allowed_ips: parse_allowed_ips(&r.allowed_ips)?,
        expires_at: r.expires_at.map(validate_expiry).transpose()?,
        meta: r.meta,
        created_by: Some(who.member_id.clone()),
        allowed_origins,
        public_value: None,
        credits: r.credits.map(validate_credits).transpose()?,
    })
}

/// One key.
#[utoipa::path(get, operation_id = "getKey", path = "/v1/keys/{id}", tag = "keys",
    responses((status = 200, body = KeyView), (status = 404, body = ProblemDocument)))]
pub async fn get(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyView>> {
    let key = state.store.get_key(&who.account_id, &id).await?;
    Ok(Json(KeyView::new(key, now_ms())))
}

/// Every report of the key's secret found in public, newest first.
#[utoipa::path(get, operation_id = "listKeyLeaks", path = "/v1/keys/{id}/leaks", tag = "keys",
    responses((status = 200, body = List<KeyLeakView>), (status = 404, body = ProblemDocument)))]
pub async fn leaks(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<List<KeyLeakView>>> {
    let leaks = state.store.list_key_leaks(&who.account_id, &id).await?;
    Ok(Json(List::complete(
        leaks.into_iter().map(KeyLeakView::from),
    )))
}

/// Changes a key's name, permissions, rate limit, expiry, customer, allowed IPs or meta.
#[utoipa::path(patch, operation_id = "updateKey", path = "/v1/keys/{id}", tag = "keys", request_body = UpdateKey,
    responses((status = 200, body = KeyView), (status = 400, body = ProblemDocument), (status = 404, body = ProblemDocument)))]
pub async fn update(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    invalidation: InvalidationSlot,
    Path(id): Path<String>,
    Body(request): Body<UpdateKey>,
) -> ApiResult<Json<KeyView>> {
    let patch = validated_patch(request)?;
    if patch.permissions.is_some() || patch.allowed_origins.is_some() {
        let current = state.store.get_key(&who.account_id, &id).await?;
        let permissions = patch.permissions.as_ref().unwrap_or(&current.permissions);
        let origins = patch
            .allowed_origins
            .as_ref()
            .unwrap_or(&current.allowed_origins);
        check_kind_rules(current.kind, permissions, origins)?;
    }
    let key = state
        .store
        .update_key(&who.account_id, &who.actor(), &id, patch)
        .await?;
    invalidation.only_changed_key(&id);
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
        allowed_origins: r
            .allowed_origins
            .as_deref()
            .map(normalize_origins)
            .transpose()?,
        credits: r
            .credits
            .map(|c| c.map(validate_credits).transpose())
            .transpose()?,
    })
}

/// Adds to or sets a metered key's balance (a customer bought more, a
/// support refund). Audited as `key.credits_changed`.
#[utoipa::path(post, operation_id = "changeKeyCredits", path = "/v1/keys/{id}/credits", tag = "keys", request_body = ChangeCredits,
    responses((status = 200, body = KeyView), (status = 400, body = ProblemDocument),
        (status = 404, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn change_credits(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    invalidation: InvalidationSlot,
    Path(id): Path<String>,
    Body(request): Body<ChangeCredits>,
) -> ApiResult<Json<KeyView>> {
    let change = match (request.add, request.set) {
        (Some(add), None) => {
            check_amount(add.unsigned_abs()).map_err(field("add"))?;
            CreditChange::Add(add)
        }
        (None, Some(set)) => {
            check_amount(set).map_err(field("set"))?;
            CreditChange::Set(set)
        }
        _ => return Err(Problem::invalid("add", "give exactly one of add and set")),
    };
    let key = state
        .store
        .change_credits(&who.account_id, &who.actor(), &id, change)
        .await?;
    invalidation.only_changed_key(&id);
    Ok(Json(KeyView::new(key, now_ms())))
}

async fn set_status(
    state: &AppState,
    who: &Principal,
    invalidation: &InvalidationSlot,
    id: &str,
    status: KeyStatus,
) -> ApiResult<Json<KeyView>> {
    let key = state
        .store
        .set_key_status(&who.account_id, &who.actor(), id, status)
        .await?;
    invalidation.only_changed_key(id);
    Ok(Json(KeyView::new(key, now_ms())))
}

/// Disables a key (status `inactive`); reversible with enable.
#[utoipa::path(post, operation_id = "disableKey", path = "/v1/keys/{id}/disable", tag = "keys",
    responses((status = 200, body = KeyView), (status = 404, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn disable(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    invalidation: InvalidationSlot,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyView>> {
    set_status(&state, &who, &invalidation, &id, KeyStatus::Inactive).await
}

/// Re-enables a disabled key.
#[utoipa::path(post, operation_id = "enableKey", path = "/v1/keys/{id}/enable", tag = "keys",
    responses((status = 200, body = KeyView), (status = 404, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn enable(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    invalidation: InvalidationSlot,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyView>> {
    set_status(&state, &who, &invalidation, &id, KeyStatus::Active).await
}

/// Revokes a key for good; its history stays. Refused for the workspace's
/// last active ingest key, and while integrations use the key unless `force`.
#[utoipa::path(post, operation_id = "revokeKey", path = "/v1/keys/{id}/revoke", tag = "keys", request_body(content = Option<RevokeKey>),
    responses((status = 200, body = KeyView), (status = 404, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn revoke(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    invalidation: InvalidationSlot,
    Path(id): Path<String>,
    OptionalBody(options): OptionalBody<RevokeKey>,
) -> ApiResult<Json<KeyView>> {
    let key = state
        .store
        .revoke_key(&who.account_id, &who.actor(), &id, options.force)
        .await?;
    invalidation.only_changed_key(&id);
    Ok(Json(KeyView::new(key, now_ms())))
}

/// Issues a new secret for the key — same id, name, permissions and
/// configuration. With `grace_seconds` the old secret keeps working that long.
#[utoipa::path(post, operation_id = "rotateKey", path = "/v1/keys/{id}/rotate", tag = "keys", request_body(content = Option<RotateKey>),
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = CreatedKey), (status = 400, body = ProblemDocument), (status = 404, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn rotate(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    invalidation: InvalidationSlot,
    Path(id): Path<String>,
    OptionalBody(options): OptionalBody<RotateKey>,
) -> ApiResult<Json<CreatedKey>> {
    if options.grace_seconds > MAX_GRACE_SECONDS {
        return Err(Problem::invalid(
            "grace_seconds",
            format!("at most {MAX_GRACE_SECONDS} (7 days)"),
        ));
    }
    let current = state.store.get_key(&who.account_id, &id).await?;
    let workspace = &current.workspace_id;
    let tag = environment_tag(&state, &who.account_id, workspace, &current.environment).await?;
    let secret = secrets::mint(&state.format, &tag);
    let replacement = KeyReplacement {
        key_id: id,
        hash_hex: secret.hash().to_hex(),
        hint: secret.hint(),
        public_value: (current.kind == KeyKind::Publishable).then(|| secret.expose().to_owned()),
        grace_ms: i64::from(options.grace_seconds) * 1000,
    };
    let key = state
        .store
        .rotate_key(&who.account_id, &who.actor(), replacement)
        .await?;
    invalidation.only_changed_key(&key.id);
    Ok(Json(CreatedKey {
        key: KeyView::new(key, now_ms()),
        secret,
    }))
}

/// Stops the old secret of a rotation now, before its grace period ends.
#[utoipa::path(post, operation_id = "endKeyGrace", path = "/v1/keys/{id}/end-grace", tag = "keys",
    responses((status = 200, body = KeyView), (status = 404, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn end_grace(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    invalidation: InvalidationSlot,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyView>> {
    let key = state
        .store
        .end_key_grace(&who.account_id, &who.actor(), &id)
        .await?;
    invalidation.only_changed_key(&id);
    Ok(Json(KeyView::new(key, now_ms())))
}

/// Deletes a key for good once its name is repeated. Its request logs and
/// audit history stay.
#[utoipa::path(delete, operation_id = "deleteKey", path = "/v1/keys/{id}", tag = "keys", request_body = DeleteKey,
    responses((status = 204), (status = 400, body = ProblemDocument), (status = 404, body = ProblemDocument), (status = 409, body = ProblemDocument)))]
pub async fn delete(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    invalidation: InvalidationSlot,
    Path(id): Path<String>,
    Body(request): Body<DeleteKey>,
) -> ApiResult<StatusCode> {
    let deletion = KeyDeletion {
        key_id: id.clone(),
        confirm_name: request.confirm_name,
        force: request.force,
    };
    state
        .store
        .delete_key(&who.account_id, &who.actor(), deletion)
        .await?;
    invalidation.only_changed_key(&id);
    Ok(StatusCode::NO_CONTENT)
}
