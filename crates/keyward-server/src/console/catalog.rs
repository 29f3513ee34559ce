//! The account's permission catalog (seed 004: "Configure Permissions"):
//! the names keys may be granted, e.g. `customers:read`, `events:write`.

use super::page::{Chrome, page};
use super::session::{ConsoleForm, ConsoleUser, NoFields};
use super::{PageResult, authorized, redirect_after};
use crate::AppState;
use crate::api::permissions;
use crate::auth::ManageCredentials;
use crate::extract::Body;
use askama::Template;
use axum::Json;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use keyward_core::PermissionName;
use serde::Deserialize;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/permissions", get(list).post(add))
        .route("/permissions/{name}/delete", post(remove))
}

#[derive(Template)]
#[template(path = "permissions.html")]
struct CatalogPage {
    chrome: Chrome,
    permissions: Vec<(String, String)>,
}

async fn list(State(state): State<AppState>, user: ConsoleUser) -> PageResult {
    let Json(catalog) = permissions::list(
        State(state.clone()),
        authorized::<ManageCredentials>(&user)?,
    )
    .await?;
    let view = CatalogPage {
        chrome: Chrome::new(&user, "credentials"),
        permissions: catalog
            .data
            .into_iter()
            .map(|p| (p.name.to_string(), p.description.unwrap_or_default()))
            .collect(),
    };
    Ok(page(&state, &user, &view))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PermissionForm {
    name: String,
    description: String,
}

async fn add(
    State(state): State<AppState>,
    ConsoleForm { user, form }: ConsoleForm<PermissionForm>,
) -> PageResult {
    let done = match PermissionName::parse(form.name.trim()).map_err(crate::api::field("name")) {
        Ok(name) => {
            let request = permissions::CreatePermission {
                name,
                description: Some(form.description.trim().to_owned()).filter(|d| !d.is_empty()),
            };
            permissions::create(State(state.clone()), authorized(&user)?, Body(request))
                .await
                .map(|created| format!("“{}” can now be granted to keys.", created.0.name))
        }
        Err(problem) => Err(problem),
    };
    redirect_after(&state, "/permissions", done)
}

async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ConsoleForm { user, .. }: ConsoleForm<NoFields>,
) -> PageResult {
    let done = permissions::delete(State(state.clone()), authorized(&user)?, Path(name.clone()))
        .await
        .map(|_| format!("“{name}” removed from the catalog."));
    redirect_after(&state, "/permissions", done)
}
