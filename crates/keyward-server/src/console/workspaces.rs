//! Workspaces (list, create with primary credentials shown once, rename,
//! switch) and a workspace's Integrations area (seeds 000, 002): the
//! credentials available in it, and which credentials the JavaScript
//! snippet, a Segment connection or a server uses.

use super::credentials::{KeyRow, every_page, keys_of, keys_of_kind, secret_page};
use super::page::{Chrome, ErrorPage, page, readable, when};
use super::session::{ConsoleForm, ConsoleUser, Flash, redirect_with};
use super::{PageResult, authorized, redirect_after};
use crate::AppState;
use crate::api::views::{KeyView, List};
use crate::api::{integrations, keys, workspaces};
use crate::auth::{Authorized, ManageCredentials};
use crate::extract::Body;
use crate::invalidate::InvalidationSlot;
use crate::problem::ApiResult;
use askama::Template;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use keyward_core::{IntegrationKind, KeyKind, KeyStatus};
use serde::Deserialize;
use std::collections::HashMap;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/workspaces", get(list).post(create))
        .route("/workspaces/{id}", get(show))
        .route("/workspaces/{id}/rename", post(rename))
        .route("/workspaces/{id}/integrations", post(add_integration))
        .route("/integrations/{id}", post(change_integration))
        .route("/integrations/{id}/delete", post(remove_integration))
        .route("/switch", get(switch))
}

#[derive(Clone)]
pub struct WorkspaceOption {
    pub id: String,
    pub name: String,
    pub environments: Vec<String>,
    pub created: String,
}

/// The account's workspaces with their environments' names.
pub async fn workspace_options(
    state: &AppState,
    user: &ConsoleUser,
) -> ApiResult<Vec<WorkspaceOption>> {
    let all = every_page(|page| async {
        let auth = Authorized::<ManageCredentials>::check(user.principal.clone())?;
        workspaces::list(State(state.clone()), auth, page).await
    })
    .await?;
    let mut options = Vec::with_capacity(all.len());
    for workspace in all {
        let Json(environments) = workspaces::list_environments(
            State(state.clone()),
            Authorized::check(user.principal.clone())?,
            Path(workspace.id.clone()),
        )
        .await?;
        options.push(WorkspaceOption {
            environments: environments.data.into_iter().map(|e| e.name).collect(),
            id: workspace.id,
            name: workspace.name,
            created: when(Some(workspace.created_at)),
        });
    }
    Ok(options)
}

#[derive(Template)]
#[template(path = "workspaces.html")]
struct WorkspacesPage {
    chrome: Chrome,
    workspaces: Vec<WorkspaceOption>,
}

async fn list(State(state): State<AppState>, user: ConsoleUser) -> PageResult {
    authorized::<ManageCredentials>(&user)?;
    let view = WorkspacesPage {
        chrome: Chrome::new(&user, "workspaces"),
        workspaces: workspace_options(&state, &user).await?,
    };
    Ok(page(&state, &user, &view))
}

#[derive(Deserialize)]
struct Name {
    name: String,
}

async fn create(
    State(state): State<AppState>,
    invalidation: InvalidationSlot,
    ConsoleForm { user, form }: ConsoleForm<Name>,
) -> PageResult {
    let request = workspaces::CreateWorkspace {
        name: form.name.trim().to_owned(),
        environments: None,
    };
    let auth = authorized(&user)?;
    match workspaces::create(State(state.clone()), auth, invalidation, Body(request)).await {
        Ok(crate::api::Created(workspace)) => {
            let primary = workspace
                .primary_credentials
                .ok_or_else(crate::problem::Problem::internal)?;
            Ok(secret_page(
                &state,
                &user,
                "Workspace created with its primary credentials",
                primary,
            ))
        }
        Err(problem) if problem.status_code().is_client_error() => Ok(redirect_with(
            &state,
            "/workspaces",
            Flash::error(readable(&problem)),
        )),
        Err(problem) => Err(problem.into()),
    }
}

async fn rename(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm { user, form }: ConsoleForm<Name>,
) -> PageResult {
    let request = workspaces::UpdateWorkspace {
        name: form.name.trim().to_owned(),
    };
    let done = workspaces::update(
        State(state.clone()),
        authorized(&user)?,
        Path(id),
        Body(request),
    )
    .await
    .map(|Json(w)| format!("Workspace renamed to “{}”.", w.name));
    redirect_after(&state, "/workspaces", done)
}

#[derive(Deserialize)]
struct Switch {
    workspace: String,
}

/// The workspace picker's target.
async fn switch(user: ConsoleUser, Query(to): Query<Switch>) -> PageResult {
    authorized::<ManageCredentials>(&user)?;
    let id: String = to
        .workspace
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    Ok(super::page::redirect(&format!("/workspaces/{id}")))
}

// ── Integrations area ───────────────────────────────────────────────────

pub struct IntegrationRow {
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    pub key_id: String,
    pub snippet: Option<String>,
    /// The keys offered to this integration (the API refuses others).
    pub choices: KeyChoices,
}

/// Keys offered in a choice of credentials: the usable ones of one page of
/// the workspace's keys, since a workspace may hold more keys than a page
/// can list (hundreds of thousands). Past that page a key is given by its
/// id.
#[derive(Clone)]
pub struct KeyChoices {
    /// (id, label) of each key offered.
    pub options: Vec<(String, String)>,
    /// The workspace has more keys than the page: the form also takes a
    /// key id.
    pub more: bool,
}

impl KeyChoices {
    fn of(page: &List<KeyView>) -> Self {
        Self {
            options: page
                .data
                .iter()
                .filter(|k| matches!(k.status, KeyStatus::Active | KeyStatus::Inactive))
                .map(|k| (k.id.clone(), choice_label(k)))
                .collect(),
            more: page.next_cursor.is_some(),
        }
    }

    fn offers(&self, key_id: &str) -> bool {
        self.options.iter().any(|(id, _)| id == key_id)
    }
}

/// `choices`, and the key an integration uses if they lack it: it is
/// always offered, on the page or not.
async fn with_key_in_use(
    state: &AppState,
    user: &ConsoleUser,
    mut choices: KeyChoices,
    in_use: Option<&str>,
) -> Result<KeyChoices, ErrorPage> {
    if let Some(key_id) = in_use.filter(|k| !choices.offers(k)) {
        let Json(key) = keys::get(
            State(state.clone()),
            authorized(user)?,
            Path(key_id.to_owned()),
        )
        .await?;
        let offered = (key.id.clone(), choice_label(&key));
        choices.options.insert(0, offered);
    }
    Ok(choices)
}

fn choice_label(k: &KeyView) -> String {
    format!("{} ({}, {})", k.name, k.hint, k.environment)
}

#[derive(Template)]
#[template(path = "workspace.html")]
struct WorkspacePage {
    chrome: Chrome,
    workspace: WorkspaceOption,
    workspaces: Vec<WorkspaceOption>,
    keys: Vec<KeyRow>,
    /// The workspace has more keys than `keys` shows.
    more_keys: bool,
    integrations: Vec<IntegrationRow>,
    /// Keys of any kind, for a new integration.
    all_choices: KeyChoices,
}

fn kind_label(kind: IntegrationKind) -> &'static str {
    match kind {
        IntegrationKind::JavascriptSnippet => "JavaScript snippet",
        IntegrationKind::Server => "Server (API)",
        IntegrationKind::Segment => "Segment",
        IntegrationKind::Custom => "Custom",
    }
}

/// The only kind of key an integration of this kind can use, if it is
/// limited to one (seed 000: the snippet runs in browsers, so only a
/// publishable key; Segment sends events, so an ingest key).
fn key_kind_for(kind: IntegrationKind) -> Option<KeyKind> {
    match kind {
        IntegrationKind::JavascriptSnippet => Some(KeyKind::Publishable),
        IntegrationKind::Segment => Some(KeyKind::Ingest),
        IntegrationKind::Server | IntegrationKind::Custom => None,
    }
}

async fn show(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    authorized::<ManageCredentials>(&user)?;
    let workspaces = workspace_options(&state, &user).await?;
    let workspace = workspaces
        .iter()
        .find(|w| w.id == id)
        .cloned()
        .ok_or_else(|| crate::problem::Problem::not_found("workspace"))?;
    let first_page = keys_of(&state, &user, &id, "", "").await?;
    let more_keys = first_page.next_cursor.is_some();
    let all_choices = KeyChoices::of(&first_page);
    // A page of each kind an integration is limited to, read once.
    let mut of_kind = HashMap::new();
    let Json(list) =
        integrations::list(State(state.clone()), authorized(&user)?, Path(id.clone())).await?;
    let mut rows = Vec::new();
    for integration in list.data {
        // Single reads carry the snippet.
        let Json(full) = integrations::get(
            State(state.clone()),
            authorized(&user)?,
            Path(integration.id.clone()),
        )
        .await?;
        let choices = match key_kind_for(full.kind) {
            None => all_choices.clone(),
            Some(kind) => match of_kind.get(&kind) {
                Some(choices) => KeyChoices::clone(choices),
                None => {
                    let page = keys_of_kind(&state, &user, &id, kind).await?;
                    of_kind.entry(kind).or_insert(KeyChoices::of(&page)).clone()
                }
            },
        };
        rows.push(IntegrationRow {
            choices: with_key_in_use(&state, &user, choices, full.key_id.as_deref()).await?,
            id: full.id,
            name: full.name,
            kind: kind_label(full.kind),
            key_id: full.key_id.unwrap_or_default(),
            snippet: full.snippet,
        });
    }
    let view = WorkspacePage {
        chrome: Chrome::new(&user, "workspaces"),
        all_choices,
        keys: first_page
            .data
            .iter()
            .map(|k| KeyRow::new(k, &workspace.name))
            .collect(),
        more_keys,
        integrations: rows,
        workspace,
        workspaces,
    };
    Ok(page(&state, &user, &view))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct IntegrationForm {
    name: String,
    kind: String,
    key_id: String,
    /// A key past the offered page, by its id: it wins over `key_id`.
    other_key_id: String,
    workspace_id: String,
}

impl IntegrationForm {
    /// The key chosen: typed, or else picked from the offered ones.
    fn chosen_key(&self) -> String {
        match self.other_key_id.trim() {
            "" => self.key_id.clone(),
            typed => typed.to_owned(),
        }
    }
}

async fn add_integration(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    ConsoleForm { user, form }: ConsoleForm<IntegrationForm>,
) -> PageResult {
    let done = match IntegrationKind::parse(&form.kind).map_err(crate::api::field("kind")) {
        Ok(kind) => {
            let request = integrations::CreateIntegration {
                name: form.name.trim().to_owned(),
                kind,
                key_id: form.chosen_key(),
            };
            integrations::create(
                State(state.clone()),
                authorized(&user)?,
                Path(workspace.clone()),
                Body(request),
            )
            .await
            .map(|created| format!("Integration “{}” added.", created.0.name))
        }
        Err(problem) => Err(problem),
    };
    redirect_after(
        &state,
        &format!("/workspaces/{}#integrations", workspace),
        done,
    )
}

async fn change_integration(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm { user, form }: ConsoleForm<IntegrationForm>,
) -> PageResult {
    let request = integrations::UpdateIntegration {
        name: None,
        key_id: Some(form.chosen_key()),
    };
    let done = integrations::update(
        State(state.clone()),
        authorized(&user)?,
        Path(id),
        Body(request),
    )
    .await
    .map(|Json(i)| format!("“{}” now uses the chosen credentials.", i.name));
    redirect_after(
        &state,
        &format!("/workspaces/{}#integrations", form.workspace_id),
        done,
    )
}

async fn remove_integration(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm { user, form }: ConsoleForm<IntegrationForm>,
) -> PageResult {
    let done = integrations::delete(State(state.clone()), authorized(&user)?, Path(id))
        .await
        .map(|_| "Integration removed.".to_owned());
    redirect_after(
        &state,
        &format!("/workspaces/{}#integrations", form.workspace_id),
        done,
    )
}
