//! Account Settings › API credentials (seeds 000, 001, 003, 004): every
//! key across workspaces with filters, the IP allowlist, creating a key
//! (secret shown once), and one key's page with rename, rotate, disable /
//! enable, revoke and delete.

use super::page::{Chrome, ErrorPage, Paging, html, page, page_at, readable, when};
use super::session::{ConsoleForm, ConsoleUser, Flash, NoFields, redirect_with};
use super::workspaces::{WorkspaceOption, workspace_options};
use super::{PageResult, authorized, redirect_after};
use crate::AppState;
use crate::api::views::{CreatedKey, CreditsView, KeyLeakView, KeyView, List};
use crate::api::{allowlist, integrations, keys, logs, permissions, workspaces};
use crate::auth::{Authorized, ManageCredentials};
use crate::extract::{Body, OptionalBody, Pagination, Timestamp, decode_cursor};
use crate::invalidate::InvalidationSlot;
use crate::problem::{ApiResult, Problem};
use askama::Template;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::Uri;
use axum::response::Response;
use axum::routing::{get, post};
use keyward_core::{
    CreditRefill, KeyKind, KeyStatus, PermissionName, RateLimitPolicy, RefillInterval,
};
use serde::Deserialize;
use time::PrimitiveDateTime;
use time::macros::format_description;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/credentials", get(list))
        .route("/credentials/new", get(new_key_page))
        .route("/workspaces/{id}/credentials", post(create))
        .route("/keys/{id}", get(show))
        .route("/keys/{id}/rename", post(rename))
        .route("/keys/{id}/settings", post(change_settings))
        .route("/keys/{id}/rotate", post(rotate))
        .route("/keys/{id}/end-grace", post(end_grace))
        .route("/keys/{id}/disable", post(disable))
        .route("/keys/{id}/enable", post(enable))
        .route("/keys/{id}/revoke", post(revoke))
        .route("/keys/{id}/delete", post(delete))
        .route("/keys/{id}/credits", post(change_credits))
        .route("/allowlist", post(add_allowed_address))
        .route("/allowlist/{id}/delete", post(remove_allowed_address))
}

pub fn first_page(limit: u32) -> Pagination {
    Pagination { limit, after: None }
}

/// Every item of a list, page after page, for the pages that show a whole
/// list (workspaces, members, tokens: a few hundred at most) — a single
/// page would silently stop at the API's 100.
pub async fn every_page<T, F, Fut>(fetch: F) -> ApiResult<Vec<T>>
where
    F: FnMut(Pagination) -> Fut,
    Fut: std::future::Future<Output = ApiResult<Json<List<T>>>>,
{
    pages_from(first_page(Pagination::MAX_LIMIT), fetch).await
}

/// The items of `page` and of every page after it.
async fn pages_from<T, F, Fut>(mut page: Pagination, mut fetch: F) -> ApiResult<Vec<T>>
where
    F: FnMut(Pagination) -> Fut,
    Fut: std::future::Future<Output = ApiResult<Json<List<T>>>>,
{
    let mut items = Vec::new();
    loop {
        let Json(list) = fetch(page.clone()).await?;
        items.extend(list.data);
        match list.next_cursor {
            Some(cursor) => page.after = Some(decode_cursor(&cursor)?),
            None => return Ok(items),
        }
    }
}

/// A key as one row of a table.
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub workspace_id: String,
    pub workspace: String,
    pub environment: String,
    pub kind: &'static str,
    pub hint: String,
    pub permissions: String,
    pub rate_limit: String,
    /// A metered key's balance, e.g. `40 left`; `Unlimited` otherwise.
    pub credits: String,
    pub status: &'static str,
    pub created: String,
    pub last_used: String,
    pub last_used_ip: String,
    /// The current secret was reported found in public.
    pub leaked: bool,
}

/// The status people see: `Rotating` while a replaced secret still works.
pub fn status_label(key: &KeyView) -> &'static str {
    match key.status {
        KeyStatus::Active if key.rotation.as_ref().is_some_and(|r| r.in_grace_period) => "Rotating",
        KeyStatus::Active => "Active",
        KeyStatus::Inactive => "Inactive",
        KeyStatus::Expired => "Expired",
        KeyStatus::Revoked => "Revoked",
    }
}

fn kind_label(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Secret => "Secret",
        KeyKind::Ingest => "Ingest",
        KeyKind::Publishable => "Publishable",
    }
}

fn rate_limit_label(policy: Option<&RateLimitPolicy>) -> String {
    policy.map_or_else(
        || "Unlimited".into(),
        |p| format!("{} / {} s", p.limit, p.window_seconds),
    )
}

impl KeyRow {
    pub fn new(key: &KeyView, workspace: &str) -> Self {
        let permissions = match key.permissions.len() {
            0 => "None".to_owned(),
            _ => key
                .permissions
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        };
        Self {
            id: key.id.clone(),
            name: key.name.clone(),
            workspace_id: key.workspace_id.clone(),
            workspace: workspace.to_owned(),
            environment: key.environment.clone(),
            kind: kind_label(key.kind),
            hint: key.hint.clone(),
            permissions,
            rate_limit: rate_limit_label(key.rate_limit.as_ref()),
            credits: key.credits.as_ref().map_or_else(
                || "Unlimited".to_owned(),
                |c| format!("{} left", c.remaining),
            ),
            status: status_label(key),
            created: when(Some(key.created_at)),
            last_used: when(key.last_used_at),
            last_used_ip: key.last_used_ip.clone().unwrap_or_default(),
            leaked: key.leaked_at.is_some(),
        }
    }
}

pub struct AllowRow {
    pub id: String,
    pub address: String,
    pub description: String,
    pub workspaces: String,
}

#[derive(Template)]
#[template(path = "credentials.html")]
struct CredentialsPage {
    chrome: Chrome,
    keys: Vec<KeyRow>,
    workspaces: Vec<WorkspaceOption>,
    environments: Vec<String>,
    filter: Filter,
    allowlist: Vec<AllowRow>,
    /// All workspaces shown, and some had more keys than one page shows.
    truncated: bool,
    /// One workspace shown: its keys page by page.
    paging: Paging,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Filter {
    workspace: String,
    environment: String,
    status: String,
    /// Where one workspace's list starts: a `next_cursor` of the API.
    cursor: String,
}

impl Filter {
    fn fields(&self) -> [(&'static str, &str); 3] {
        [
            ("workspace", &self.workspace),
            ("environment", &self.environment),
            ("status", &self.status),
        ]
    }
}

/// Keys shown per workspace: one page of the API (the template says 100).
const PAGE: u32 = Pagination::MAX_LIMIT;

/// Lists a workspace's first page of keys through the API handler (its
/// filters included).
pub async fn keys_of(
    state: &AppState,
    user: &ConsoleUser,
    workspace: &str,
    environment: &str,
    status: &str,
) -> ApiResult<List<KeyView>> {
    let filter = [("environment", environment), ("status", status)];
    keys_page(state, user, workspace, &filter, first_page(PAGE)).await
}

/// The first page of a workspace's keys of `kind`.
pub async fn keys_of_kind(
    state: &AppState,
    user: &ConsoleUser,
    workspace: &str,
    kind: KeyKind,
) -> ApiResult<List<KeyView>> {
    let filter = [("kind", kind.as_str())];
    keys_page(state, user, workspace, &filter, first_page(PAGE)).await
}

/// A page of a workspace's keys; `filter` holds the list's query fields
/// (`environment`, `status`, `kind`), empty ones ignored.
async fn keys_page(
    state: &AppState,
    user: &ConsoleUser,
    workspace: &str,
    filter: &[(&str, &str)],
    at: Pagination,
) -> ApiResult<List<KeyView>> {
    let uri = super::activity::query_uri(filter)?;
    let Json(list) = keys::list(
        State(state.clone()),
        Authorized::check(user.principal.clone())?,
        Path(workspace.to_owned()),
        uri,
        at,
    )
    .await?;
    Ok(list)
}

async fn list(
    State(state): State<AppState>,
    user: ConsoleUser,
    Query(filter): Query<Filter>,
) -> PageResult {
    authorized::<ManageCredentials>(&user)?;
    let workspaces = workspace_options(&state, &user).await?;
    let mut rows = Vec::new();
    let mut truncated = false;
    let mut paging = Paging::oldest_first("/credentials", &[], "", None);
    let mut environments = Vec::new();
    let by_status = [
        ("environment", filter.environment.as_str()),
        ("status", filter.status.as_str()),
    ];
    for workspace in &workspaces {
        environments.extend(workspace.environments.iter().cloned());
        if filter.workspace.is_empty() {
            // Every workspace's first page; one chosen pages on.
            let list =
                keys_page(&state, &user, &workspace.id, &by_status, first_page(PAGE)).await?;
            truncated |= list.next_cursor.is_some();
            rows.extend(list.data.iter().map(|k| KeyRow::new(k, &workspace.name)));
        } else if filter.workspace == workspace.id {
            let at = page_at(PAGE, &filter.cursor)?;
            let list = keys_page(&state, &user, &workspace.id, &by_status, at).await?;
            paging = Paging::oldest_first(
                "/credentials",
                &filter.fields(),
                &filter.cursor,
                list.next_cursor.as_deref(),
            );
            rows.extend(list.data.iter().map(|k| KeyRow::new(k, &workspace.name)));
        }
    }
    environments.sort();
    environments.dedup();
    let allowlist = allowlist_rows(&state, &user, &workspaces).await?;
    let page_view = CredentialsPage {
        chrome: Chrome::new(&user, "credentials"),
        keys: rows,
        workspaces,
        environments,
        filter,
        allowlist,
        truncated,
        paging,
    };
    Ok(page(&state, &user, &page_view))
}

async fn allowlist_rows(
    state: &AppState,
    user: &ConsoleUser,
    workspaces: &[WorkspaceOption],
) -> ApiResult<Vec<AllowRow>> {
    let Json(entries) = allowlist::list(
        State(state.clone()),
        Authorized::check(user.principal.clone())?,
    )
    .await?;
    let name_of = |id: &String| {
        workspaces
            .iter()
            .find(|w| &w.id == id)
            .map_or_else(|| id.clone(), |w| w.name.clone())
    };
    Ok(entries
        .data
        .into_iter()
        .map(|e| AllowRow {
            id: e.id,
            address: e.address,
            description: e.description.unwrap_or_default(),
            workspaces: e
                .workspace_ids
                .iter()
                .map(name_of)
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect())
}

// ── Creating a key ───────────────────────────────────────────────────────

/// The create form as typed: kept as text so a refused form comes back as
/// the person left it.
#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct KeyForm {
    pub name: String,
    pub environment: String,
    pub kind: String,
    pub permissions: Vec<String>,
    pub rate_limit: String,
    pub rate_window: String,
    pub expires_at: String,
    pub customer_id: String,
    pub allowed_ips: String,
    pub allowed_origins: String,
    /// Create only: a balance to meter the key from (empty: unlimited).
    pub credits: String,
    /// Create only: `daily` or `monthly` sets the balance back to
    /// `credits` every day or on the 1st of every month; empty never.
    pub refill: String,
}

impl KeyForm {
    fn has_permission(&self, name: &str) -> bool {
        self.permissions.iter().any(|p| p == name)
    }
}

fn lines(text: &str) -> Vec<String> {
    text.split(['\n', ',', ' '])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn number(text: &str, field: &str) -> ApiResult<u32> {
    text.trim()
        .parse()
        .map_err(|_| Problem::invalid(field, "must be a whole number"))
}

/// A key's settings as typed, checked: what create and the settings form
/// share.
struct Settings {
    permissions: Vec<PermissionName>,
    rate_limit: Option<RateLimitPolicy>,
    expires_at: Option<Timestamp>,
    customer_id: Option<String>,
    allowed_ips: Vec<String>,
    allowed_origins: Vec<String>,
}

/// `datetime-local` values, with or without seconds, read as UTC.
fn local_time(text: &str) -> ApiResult<Option<Timestamp>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let with_seconds = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let without = format_description!("[year]-[month]-[day]T[hour]:[minute]");
    PrimitiveDateTime::parse(text, &with_seconds)
        .or_else(|_| PrimitiveDateTime::parse(text, &without))
        .map(|at| Some(Timestamp(at.assume_utc())))
        .map_err(|_| Problem::invalid("expires_at", "must be a date and time"))
}

impl KeyForm {
    fn settings(&self) -> ApiResult<Settings> {
        let permissions = self
            .permissions
            .iter()
            .map(|p| PermissionName::parse(p).map_err(crate::api::field("permissions")))
            .collect::<ApiResult<_>>()?;
        let rate_limit = match (self.rate_limit.trim(), self.rate_window.trim()) {
            ("", "") => None,
            (limit, window) => Some(RateLimitPolicy {
                limit: number(limit, "rate_limit.limit")?,
                window_seconds: number(window, "rate_limit.window_seconds")?,
            }),
        };
        Ok(Settings {
            permissions,
            rate_limit,
            expires_at: local_time(&self.expires_at)?,
            customer_id: Some(self.customer_id.trim().to_owned()).filter(|c| !c.is_empty()),
            allowed_ips: lines(&self.allowed_ips),
            allowed_origins: lines(&self.allowed_origins),
        })
    }

    /// The create form's credits, as the API's request.
    fn credits_request(&self) -> ApiResult<Option<keys::CreditsRequest>> {
        let amount = self.credits.trim();
        if amount.is_empty() {
            return Ok(None);
        }
        let remaining: u64 = amount
            .parse()
            .map_err(|_| Problem::invalid("credits.remaining", "must be a whole number"))?;
        Ok(Some(keys::CreditsRequest {
            remaining,
            refill: refill_to(remaining, &self.refill, None, "credits.refill.interval")?,
        }))
    }

    /// The settings form of an existing key, filled in as it is.
    fn of(key: &KeyView) -> Self {
        let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
        Self {
            permissions: key.permissions.iter().map(|p| p.to_string()).collect(),
            rate_limit: key
                .rate_limit
                .map(|p| p.limit.to_string())
                .unwrap_or_default(),
            rate_window: key
                .rate_limit
                .map(|p| p.window_seconds.to_string())
                .unwrap_or_default(),
            expires_at: key
                .expires_at
                .and_then(|at| at.format(&format).ok())
                .unwrap_or_default(),
            customer_id: key.customer_id.clone().unwrap_or_default(),
            allowed_ips: key.allowed_ips.join("\n"),
            allowed_origins: key.allowed_origins.join("\n"),
            ..Self::default()
        }
    }
}

/// The form as the API's create request; mistakes name the API's field.
fn create_request(form: KeyForm) -> ApiResult<keys::CreateKey> {
    let kind = KeyKind::parse(&form.kind).map_err(crate::api::field("kind"))?;
    let settings = form.settings()?;
    let credits = form.credits_request()?;
    Ok(keys::CreateKey {
        name: form.name.trim().to_owned(),
        environment: form.environment,
        kind,
        permissions: settings.permissions,
        rate_limit: settings.rate_limit,
        expires_at: settings.expires_at,
        customer_id: settings.customer_id,
        allowed_ips: settings.allowed_ips,
        meta: Default::default(),
        allowed_origins: settings.allowed_origins,
        credits,
    })
}

/// The settings form as the API's update: every setting replaced (an empty
/// field clears it); origins only for publishable keys.
fn update_request(form: &KeyForm, kind: KeyKind) -> ApiResult<keys::UpdateKey> {
    let settings = form.settings()?;
    Ok(keys::UpdateKey {
        permissions: Some(settings.permissions),
        rate_limit: Some(settings.rate_limit),
        expires_at: Some(settings.expires_at),
        customer_id: Some(settings.customer_id),
        allowed_ips: Some(settings.allowed_ips),
        allowed_origins: (kind == KeyKind::Publishable).then_some(settings.allowed_origins),
        ..Default::default()
    })
}

#[derive(Template)]
#[template(path = "key_new.html")]
struct NewKeyPage {
    chrome: Chrome,
    workspace: WorkspaceOption,
    workspaces: Vec<WorkspaceOption>,
    catalog: Vec<(String, String)>,
    form: KeyForm,
    error: Option<String>,
}

/// The permission catalog as (name, description), for checkboxes.
async fn catalog_choices(state: &AppState, user: &ConsoleUser) -> ApiResult<Vec<(String, String)>> {
    let Json(catalog) = permissions::list(
        State(state.clone()),
        Authorized::check(user.principal.clone())?,
    )
    .await?;
    Ok(catalog
        .data
        .into_iter()
        .map(|p| (p.name.to_string(), p.description.unwrap_or_default()))
        .collect())
}

async fn new_key_form(
    state: &AppState,
    user: &ConsoleUser,
    workspace_id: &str,
    form: KeyForm,
    error: Option<String>,
) -> Result<NewKeyPage, ErrorPage> {
    let workspaces = workspace_options(state, user).await?;
    let workspace = workspaces
        .iter()
        .find(|w| w.id == workspace_id)
        .cloned()
        .ok_or_else(|| ErrorPage::from(Problem::not_found("workspace")))?;
    let catalog = catalog_choices(state, user).await?;
    Ok(NewKeyPage {
        chrome: Chrome::new(user, "credentials"),
        workspace,
        workspaces,
        catalog,
        form,
        error,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct InWorkspace {
    workspace: String,
}

/// The create form for a workspace (the first one when none is chosen).
async fn new_key_page(
    State(state): State<AppState>,
    user: ConsoleUser,
    Query(query): Query<InWorkspace>,
) -> PageResult {
    authorized::<ManageCredentials>(&user)?;
    let workspace_id = match query.workspace {
        id if !id.is_empty() => id,
        _ => workspace_options(&state, &user)
            .await?
            .first()
            .map(|w| w.id.clone())
            .ok_or_else(|| Problem::not_found("workspace"))?,
    };
    let form = KeyForm {
        kind: "secret".into(),
        ..KeyForm::default()
    };
    let view = new_key_form(&state, &user, &workspace_id, form, None).await?;
    Ok(page(&state, &user, &view))
}

async fn create(
    State(state): State<AppState>,
    Path(workspace_id): Path<String>,
    invalidation: InvalidationSlot,
    ConsoleForm { user, form }: ConsoleForm<KeyForm>,
) -> PageResult {
    let auth = authorized::<ManageCredentials>(&user)?;
    let created = match create_request(form.clone()) {
        Ok(request) => {
            keys::create(
                State(state.clone()),
                auth,
                invalidation,
                Path(workspace_id.clone()),
                Body(request),
            )
            .await
        }
        Err(problem) => Err(problem),
    };
    match created {
        Ok(crate::api::Created(created)) => {
            Ok(secret_page(&state, &user, "API key created", created))
        }
        Err(problem) if problem.status_code().is_client_error() => {
            let status = problem.status_code();
            let view =
                new_key_form(&state, &user, &workspace_id, form, Some(readable(&problem))).await?;
            Ok(html(status, &view))
        }
        Err(problem) => Err(problem.into()),
    }
}

// ── Showing a secret once ───────────────────────────────────────────────

/// One credential value in the dialog.
pub struct Shown {
    pub label: &'static str,
    pub value: String,
    /// Copy buttons and tests find each value by this.
    pub slot: &'static str,
}

#[derive(Template)]
#[template(path = "secret.html")]
pub struct SecretPage {
    pub chrome: Chrome,
    pub heading: &'static str,
    pub name: String,
    pub values: Vec<Shown>,
    pub note: Option<String>,
    pub continue_to: String,
}

/// The page that shows a new secret, the only time it is ever shown.
pub fn secret_page(
    state: &AppState,
    user: &ConsoleUser,
    heading: &'static str,
    created: CreatedKey,
) -> Response {
    let key = &created.key;
    let mut values = Vec::new();
    if key.kind == KeyKind::Ingest {
        values.push(Shown {
            label: "Site ID",
            value: key.id.clone(),
            slot: "site-id",
        });
    }
    values.push(Shown {
        label: if key.kind == KeyKind::Ingest {
            "API key (secret)"
        } else {
            "API key"
        },
        value: created.secret.expose().to_owned(),
        slot: "secret",
    });
    let note = key
        .rotation
        .as_ref()
        .filter(|r| r.in_grace_period)
        .map(|r| {
            format!(
                "The replaced secret ({}) keeps working until {}.",
                r.old_hint,
                when(Some(r.old_secret_expires_at))
            )
        });
    let view = SecretPage {
        chrome: Chrome::new(user, "credentials"),
        heading,
        name: key.name.clone(),
        values,
        note,
        continue_to: format!("/keys/{}", key.id),
    };
    page(state, user, &view)
}

// ── One key ─────────────────────────────────────────────────────────────

pub struct LogRow {
    pub at: String,
    pub code: String,
    pub status: u16,
    pub ok: bool,
    pub client_ip: String,
    pub environment: String,
    pub permissions: String,
    pub latency_us: i64,
    pub key_id: String,
    /// `GET /orders/7` for a gateway request; empty for a verify call.
    pub request: String,
}

impl From<logs::RequestLogView> for LogRow {
    fn from(l: logs::RequestLogView) -> Self {
        Self {
            at: when(Some(l.at)),
            ok: l.status < 300,
            code: l.code,
            status: l.status,
            client_ip: l.client_ip.unwrap_or_default(),
            environment: l.environment.unwrap_or_default(),
            permissions: l.permissions.join(", "),
            latency_us: l.latency_us,
            key_id: l.key_id.unwrap_or_default(),
            request: match (l.method, l.path) {
                (Some(method), Some(path)) => format!("{method} {path}"),
                _ => String::new(),
            },
        }
    }
}

#[derive(Template)]
#[template(path = "key.html")]
struct KeyPage {
    chrome: Chrome,
    key: KeyRow,
    view: KeyView,
    /// Integrations using this key, named in the revoke / delete warnings.
    used_by: Vec<String>,
    /// The workspace's last active ingest key cannot be revoked or deleted.
    last_ingest: bool,
    logs: Vec<LogRow>,
    old_hint: String,
    old_expires: String,
    old_last_used: String,
    expires: String,
    /// The settings form, filled in with the key's current settings.
    form: KeyForm,
    catalog: Vec<(String, String)>,
    /// Reports of the key's secrets found in public, newest first.
    leaks: Vec<LeakRow>,
    /// The key's credits in words: "40 left, set back to 1,000 every day".
    credits: String,
    /// The metering form's refill, as the key has it: "", "daily" or "monthly".
    refill: &'static str,
}

/// A metered key's balance and refill in words; "Unlimited" otherwise.
fn credits_in_words(credits: Option<&CreditsView>) -> String {
    let Some(credits) = credits else {
        return "Unlimited".to_owned();
    };
    let left = format!("{} left", credits.remaining);
    match credits.refill {
        None => left,
        Some(CreditRefill {
            interval: RefillInterval::Daily,
            amount,
            ..
        }) => format!("{left}, set back to {amount} every day (00:00 UTC)"),
        Some(CreditRefill {
            interval: RefillInterval::Monthly,
            amount,
            day,
        }) => format!(
            "{left}, set back to {amount} on day {} of every month (00:00 UTC)",
            day.unwrap_or(1)
        ),
    }
}

/// One report of a secret found in public, as the key page lists it.
struct LeakRow {
    reported: String,
    reporter: &'static str,
    /// The URL it was found at; empty when the reporter gave none.
    location: String,
    /// Only an `https://` location is made a link: the page must not carry
    /// a `javascript:` URL, whoever reported it.
    linkable: bool,
    found_in: String,
    secret: &'static str,
    /// What Keyward did, in words.
    outcome: String,
}

impl From<KeyLeakView> for LeakRow {
    fn from(leak: KeyLeakView) -> Self {
        let outcome = match leak.action {
            "revoked" => "Revoked the key.".to_owned(),
            "grace_ended" => "Stopped the replaced secret.".to_owned(),
            "flagged" => format!(
                "Left working: {}",
                leak.reason.as_deref().unwrap_or("a person must act")
            ),
            _ => "Nothing: that secret no longer worked.".to_owned(),
        };
        Self {
            reported: when(Some(leak.reported_at)),
            reporter: if leak.reporter == "github" {
                "GitHub secret scanning"
            } else {
                "a scanner"
            },
            linkable: leak
                .location
                .as_deref()
                .is_some_and(|url| url.starts_with("https://")),
            location: leak.location.unwrap_or_default(),
            found_in: leak.found_in.unwrap_or_default(),
            secret: if leak.secret == "replaced" {
                "the replaced secret"
            } else {
                "the secret"
            },
            outcome,
        }
    }
}

impl KeyPage {
    fn is(&self, status: &str) -> bool {
        self.view.status.as_str() == status
    }
}

async fn show(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    let Json(key) = keys::get(
        State(state.clone()),
        authorized::<ManageCredentials>(&user)?,
        Path(id.clone()),
    )
    .await?;
    let Json(workspace) = workspaces::get(
        State(state.clone()),
        authorized(&user)?,
        Path(key.workspace_id.clone()),
    )
    .await?;
    let Json(used) = integrations::list(
        State(state.clone()),
        authorized(&user)?,
        Path(key.workspace_id.clone()),
    )
    .await?;
    let used_by = used
        .data
        .into_iter()
        .filter(|i| i.key_id.as_deref() == Some(key.id.as_str()))
        .map(|i| i.name)
        .collect();
    // Two of the workspace's active ingest keys tell whether this is its last.
    let active_ingest = [("status", "active"), ("kind", "ingest")];
    let ingest = keys_page(
        &state,
        &user,
        &key.workspace_id,
        &active_ingest,
        first_page(2),
    )
    .await?;
    let last_ingest =
        key.kind == KeyKind::Ingest && key.status == KeyStatus::Active && ingest.data.len() <= 1;
    let Json(recent) = logs::list_for_key(
        State(state.clone()),
        authorized(&user)?,
        Path(key.id.clone()),
        Uri::from_static("/"),
        first_page(20),
    )
    .await?;
    let Json(leaks) = keys::leaks(
        State(state.clone()),
        authorized(&user)?,
        Path(key.id.clone()),
    )
    .await?;
    let rotation = key.rotation.as_ref().filter(|r| r.in_grace_period);
    let view = KeyPage {
        chrome: Chrome::new(&user, "credentials"),
        key: KeyRow::new(&key, &workspace.name),
        used_by,
        last_ingest,
        logs: recent.data.into_iter().map(LogRow::from).collect(),
        old_hint: rotation.map(|r| r.old_hint.clone()).unwrap_or_default(),
        old_expires: when(rotation.map(|r| r.old_secret_expires_at)),
        old_last_used: when(rotation.and_then(|r| r.old_secret_last_used_at)),
        expires: key
            .expires_at
            .map_or_else(|| "Never".into(), |at| when(Some(at))),
        form: KeyForm::of(&key),
        catalog: catalog_choices(&state, &user).await?,
        leaks: leaks.data.into_iter().map(LeakRow::from).collect(),
        credits: credits_in_words(key.credits.as_ref()),
        refill: match key.credits.as_ref().and_then(|c| c.refill) {
            None => "",
            Some(refill) => refill.interval.as_str(),
        },
        view: key,
    };
    Ok(page(&state, &user, &view))
}

#[derive(Deserialize)]
struct Rename {
    name: String,
}

/// A refill back to `amount` as a form chose it: `daily`, `monthly`, or
/// empty for none. A monthly refill keeps the day of the key's current one
/// (the console offers only the 1st, the API any day).
fn refill_to(
    amount: u64,
    chosen: &str,
    current: Option<CreditRefill>,
    field: &str,
) -> ApiResult<Option<CreditRefill>> {
    if chosen.is_empty() {
        return Ok(None);
    }
    let interval = RefillInterval::parse(chosen)
        .ok_or_else(|| Problem::invalid(field, "must be daily or monthly"))?;
    let day = current
        .filter(|c| c.interval == interval)
        .and_then(|c| c.day);
    Ok(Some(CreditRefill {
        interval,
        amount,
        day,
    }))
}

/// The key page's credits forms: `add` to or `set` a metered key's
/// balance; `meter` the key from `amount` with a `refill` (replacing its
/// balance and refill); or make it `unlimited` again.
#[derive(Deserialize)]
struct CreditsForm {
    change: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    refill: String,
}

async fn change_credits(
    State(state): State<AppState>,
    Path(id): Path<String>,
    invalidation: InvalidationSlot,
    ConsoleForm { user, form }: ConsoleForm<CreditsForm>,
) -> PageResult {
    let Json(key) = keys::get(State(state.clone()), authorized(&user)?, Path(id.clone())).await?;
    let done = match credits_request(&form, key.credits.as_ref()) {
        Ok(CreditsAction::Change(change)) => keys::change_credits(
            State(state.clone()),
            authorized(&user)?,
            invalidation,
            Path(id.clone()),
            Body(change),
        )
        .await
        .map(|Json(k)| format!("Credits: {}.", credits_in_words(k.credits.as_ref()))),
        Ok(CreditsAction::Meter(update)) => keys::update(
            State(state.clone()),
            authorized(&user)?,
            invalidation,
            Path(id.clone()),
            Body(update),
        )
        .await
        .map(|Json(k)| match &k.credits {
            Some(credits) => format!("Metered: {}.", credits_in_words(Some(credits))),
            None => "No longer metered: its requests are unlimited.".to_owned(),
        }),
        Err(problem) => Err(problem),
    };
    redirect_after(&state, &format!("/keys/{id}"), done)
}

enum CreditsAction {
    Change(keys::ChangeCredits),
    Meter(keys::UpdateKey),
}

/// The form as the API request it stands for; a key without credits is
/// metered from the amount, whatever the change chosen. `current` is the
/// key's credits.
fn credits_request(form: &CreditsForm, current: Option<&CreditsView>) -> ApiResult<CreditsAction> {
    let metering = |credits| {
        CreditsAction::Meter(keys::UpdateKey {
            credits: Some(credits),
            ..Default::default()
        })
    };
    if current.is_some() && form.change == "unlimited" {
        return Ok(metering(None));
    }
    let amount: i64 = form
        .amount
        .trim()
        .parse()
        .map_err(|_| Problem::invalid("amount", "must be a whole number"))?;
    let balance =
        || u64::try_from(amount).map_err(|_| Problem::invalid("amount", "must not be negative"));
    if current.is_none() || form.change == "meter" {
        let remaining = balance()?;
        let current_refill = current.and_then(|c| c.refill);
        return Ok(metering(Some(keys::CreditsRequest {
            remaining,
            refill: refill_to(remaining, &form.refill, current_refill, "refill")?,
        })));
    }
    let change = match form.change.as_str() {
        "add" => keys::ChangeCredits {
            add: Some(amount),
            set: None,
        },
        "set" => keys::ChangeCredits {
            add: None,
            set: Some(balance()?),
        },
        _ => {
            return Err(Problem::invalid(
                "change",
                "must be add, set, meter or unlimited",
            ));
        }
    };
    Ok(CreditsAction::Change(change))
}

async fn rename(
    State(state): State<AppState>,
    Path(id): Path<String>,
    invalidation: InvalidationSlot,
    ConsoleForm { user, form }: ConsoleForm<Rename>,
) -> PageResult {
    let request = keys::UpdateKey {
        name: Some(form.name.trim().to_owned()),
        ..Default::default()
    };
    let auth = authorized(&user)?;
    let done = keys::update(
        State(state.clone()),
        auth,
        invalidation,
        Path(id.clone()),
        Body(request),
    )
    .await
    .map(|Json(k)| format!("Renamed to “{}”.", k.name));
    redirect_after(&state, &format!("/keys/{id}"), done)
}

/// Permissions, rate limit ("increase the threshold in the key's
/// settings", seed 004), expiry, customer, allowed IPs and origins.
async fn change_settings(
    State(state): State<AppState>,
    Path(id): Path<String>,
    invalidation: InvalidationSlot,
    ConsoleForm { user, form }: ConsoleForm<KeyForm>,
) -> PageResult {
    let auth = authorized::<ManageCredentials>(&user)?;
    let Json(key) = keys::get(State(state.clone()), auth, Path(id.clone())).await?;
    let done = match update_request(&form, key.kind) {
        Ok(request) => keys::update(
            State(state.clone()),
            authorized(&user)?,
            invalidation,
            Path(id.clone()),
            Body(request),
        )
        .await
        .map(|Json(k)| format!("Settings of “{}” saved; they apply at once.", k.name)),
        Err(problem) => Err(problem),
    };
    redirect_after(&state, &format!("/keys/{id}"), done)
}

#[derive(Deserialize)]
struct Rotate {
    grace_seconds: String,
}

async fn rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    invalidation: InvalidationSlot,
    ConsoleForm { user, form }: ConsoleForm<Rotate>,
) -> PageResult {
    let rotated = match number(&form.grace_seconds, "grace_seconds") {
        Ok(grace_seconds) => {
            let options = OptionalBody(keys::RotateKey { grace_seconds });
            keys::rotate(
                State(state.clone()),
                authorized(&user)?,
                invalidation,
                Path(id.clone()),
                options,
            )
            .await
        }
        Err(problem) => Err(problem),
    };
    match rotated {
        Ok(Json(created)) => Ok(secret_page(&state, &user, "Key rotated", created)),
        Err(problem) => redirect_after(&state, &format!("/keys/{id}"), Err(problem)),
    }
}

async fn end_grace(
    State(state): State<AppState>,
    Path(id): Path<String>,
    invalidation: InvalidationSlot,
    ConsoleForm { user, .. }: ConsoleForm<NoFields>,
) -> PageResult {
    let done = keys::end_grace(
        State(state.clone()),
        authorized(&user)?,
        invalidation,
        Path(id.clone()),
    )
    .await
    .map(|_| "The replaced secret no longer works.".to_owned());
    redirect_after(&state, &format!("/keys/{id}"), done)
}

async fn disable(
    State(state): State<AppState>,
    Path(id): Path<String>,
    invalidation: InvalidationSlot,
    ConsoleForm { user, .. }: ConsoleForm<NoFields>,
) -> PageResult {
    let done = keys::disable(
        State(state.clone()),
        authorized(&user)?,
        invalidation,
        Path(id.clone()),
    )
    .await
    .map(|Json(k)| {
        format!(
            "“{}” is disabled: it is refused until you enable it.",
            k.name
        )
    });
    redirect_after(&state, &format!("/keys/{id}"), done)
}

async fn enable(
    State(state): State<AppState>,
    Path(id): Path<String>,
    invalidation: InvalidationSlot,
    ConsoleForm { user, .. }: ConsoleForm<NoFields>,
) -> PageResult {
    let done = keys::enable(
        State(state.clone()),
        authorized(&user)?,
        invalidation,
        Path(id.clone()),
    )
    .await
    .map(|Json(k)| format!("“{}” is active again.", k.name));
    redirect_after(&state, &format!("/keys/{id}"), done)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Force {
    force: Option<String>,
    confirm_name: String,
}

async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    invalidation: InvalidationSlot,
    ConsoleForm { user, form }: ConsoleForm<Force>,
) -> PageResult {
    let options = OptionalBody(keys::RevokeKey {
        force: form.force.is_some(),
    });
    let done = keys::revoke(
        State(state.clone()),
        authorized(&user)?,
        invalidation,
        Path(id.clone()),
        options,
    )
    .await
    .map(|Json(k)| format!("“{}” is revoked: it will never work again.", k.name));
    redirect_after(&state, &format!("/keys/{id}"), done)
}

async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    invalidation: InvalidationSlot,
    ConsoleForm { user, form }: ConsoleForm<Force>,
) -> PageResult {
    let request = keys::DeleteKey {
        confirm_name: form.confirm_name,
        force: form.force.is_some(),
    };
    let auth = authorized(&user)?;
    match keys::delete(
        State(state.clone()),
        auth,
        invalidation,
        Path(id.clone()),
        Body(request),
    )
    .await
    {
        Ok(_) => Ok(redirect_with(
            &state,
            "/credentials",
            Flash::ok("The key was deleted. Its request logs and audit history remain."),
        )),
        Err(problem) => redirect_after(&state, &format!("/keys/{id}"), Err(problem)),
    }
}

// ── IP allowlist (seed 001) ─────────────────────────────────────────────

#[derive(Deserialize, Default)]
#[serde(default)]
struct AllowForm {
    address: String,
    description: String,
    workspace_ids: Vec<String>,
}

async fn add_allowed_address(
    State(state): State<AppState>,
    ConsoleForm { user, form }: ConsoleForm<AllowForm>,
) -> PageResult {
    let request = allowlist::CreateAllowlistEntry {
        address: form.address.trim().to_owned(),
        workspace_ids: form.workspace_ids,
        description: Some(form.description.trim().to_owned()).filter(|d| !d.is_empty()),
    };
    let done = allowlist::create(State(state.clone()), authorized(&user)?, Body(request))
        .await
        .map(|created| {
            format!(
                "{} may now use the API of the chosen workspaces; other addresses are refused there.",
                created.0.address
            )
        });
    redirect_after(&state, "/credentials#allowlist", done)
}

async fn remove_allowed_address(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm { user, .. }: ConsoleForm<NoFields>,
) -> PageResult {
    let done = allowlist::delete(State(state.clone()), authorized(&user)?, Path(id))
        .await
        .map(|_| "Address removed from the allowlist.".to_owned());
    redirect_after(&state, "/credentials#allowlist", done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_becomes_the_api_request() {
        let form = KeyForm {
            name: " Main Website Integration ".into(),
            environment: "production".into(),
            kind: "secret".into(),
            permissions: vec!["customers:read".into()],
            rate_limit: "100".into(),
            rate_window: "60".into(),
            expires_at: "2030-01-02T03:04".into(),
            customer_id: String::new(),
            allowed_ips: "10.0.0.0/8\n 192.0.2.1 ".into(),
            allowed_origins: String::new(),
            credits: "5000".into(),
            refill: "monthly".into(),
        };
        let request = create_request(form).unwrap();
        let credits = request.credits.unwrap();
        assert_eq!(credits.remaining, 5000);
        assert_eq!(
            credits.refill.map(|r| (r.interval, r.amount, r.day)),
            Some((RefillInterval::Monthly, 5000, None))
        );
        assert_eq!(request.name, "Main Website Integration");
        assert_eq!(request.rate_limit.unwrap().limit, 100);
        assert_eq!(request.allowed_ips, ["10.0.0.0/8", "192.0.2.1"]);
        assert_eq!(request.customer_id, None);
        assert_eq!(
            request.expires_at.unwrap().0.unix_timestamp(),
            1_893_553_440
        );
    }

    #[test]
    fn a_keys_settings_form_saves_what_it_shows() {
        let form = KeyForm {
            kind: "secret".into(),
            permissions: vec!["customers:read".into()],
            rate_limit: "5".into(),
            rate_window: "1".into(),
            expires_at: "2031-05-06T07:08:09".into(),
            customer_id: "cus_1".into(),
            allowed_ips: "10.0.0.0/8".into(),
            ..KeyForm::default()
        };
        let created = create_request(form).unwrap();
        let view = KeyView {
            permissions: created.permissions.clone(),
            rate_limit: created.rate_limit,
            expires_at: created.expires_at.map(|t| t.0),
            customer_id: created.customer_id.clone(),
            allowed_ips: created.allowed_ips.clone(),
            ..KeyView::sample()
        };
        let update = update_request(&KeyForm::of(&view), KeyKind::Secret).unwrap();
        assert_eq!(update.permissions, Some(created.permissions));
        assert_eq!(update.rate_limit, Some(created.rate_limit));
        assert_eq!(
            update.expires_at.unwrap().map(|t| t.0),
            created.expires_at.map(|t| t.0),
            "seconds survive the round trip"
        );
        assert_eq!(update.customer_id, Some(Some("cus_1".into())));
        assert_eq!(update.allowed_origins, None, "secret keys have no origins");
        // Emptied fields clear the setting.
        let cleared = update_request(&KeyForm::default(), KeyKind::Secret).unwrap();
        assert_eq!(cleared.rate_limit, Some(None));
        assert_eq!(cleared.expires_at.map(|e| e.is_none()), Some(true));
    }

    #[test]
    fn form_mistakes_name_the_field() {
        let bad = |adjust: fn(&mut KeyForm)| {
            let mut form = KeyForm {
                kind: "secret".into(),
                ..KeyForm::default()
            };
            adjust(&mut form);
            create_request(form).err().unwrap().field.unwrap()
        };
        assert_eq!(bad(|f| f.rate_limit = "ten".into()), "rate_limit.limit");
        assert_eq!(
            bad(|f| f.rate_limit = "10".into()),
            "rate_limit.window_seconds"
        );
        assert_eq!(bad(|f| f.expires_at = "tomorrow".into()), "expires_at");
        assert_eq!(bad(|f| f.kind = "root".into()), "kind");
        assert_eq!(
            bad(|f| f.permissions = vec!["NOT VALID".into()]),
            "permissions"
        );
    }
}
