//! The web console (SPEC §5; seeds 000, 001, 003, 004): server-rendered
//! pages at `/`, beside the API, for people signed in with email and
//! password.
//!
//! Every action goes through the same handler as its `/v1` endpoint, called
//! with the signed-in member as the principal: validation, the seeds' rules,
//! audit and authorization are the API's, so the two cannot drift. The
//! console only turns forms into request bodies and problems into readable
//! messages. Pages work without JavaScript; `console.js` adds copy buttons
//! and confirmations.

mod activity;
mod catalog;
mod credentials;
mod page;
mod people;
mod session;
mod sign_in;
mod tokens;
mod workspaces;

pub use session::ConsoleState;

use crate::AppState;
use crate::auth::{Authorized, Requirement};
use crate::problem::ApiResult;
use axum::Router;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use page::ErrorPage;
use session::{ConsoleUser, Flash};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/assets/console.css", get(stylesheet))
        .route("/assets/console.js", get(script))
        .merge(sign_in::routes())
        .merge(workspaces::routes())
        .merge(credentials::routes())
        .merge(people::routes())
        .merge(tokens::routes())
        .merge(activity::routes())
        .merge(catalog::routes())
}

/// The member as the API principal for an endpoint requiring `R`; a
/// readable 403 page when they lack it (the navigation hides what they
/// cannot use, but the server decides).
fn authorized<R: Requirement>(user: &ConsoleUser) -> Result<Authorized<R>, ErrorPage> {
    Authorized::check(user.principal.clone()).map_err(ErrorPage::from)
}

/// What a console handler returns: a page, or an error page.
type PageResult = Result<Response, ErrorPage>;

/// After a form: back to `to` with what happened as a one-time message.
/// The person's mistakes (4xx) become that message; server faults an error
/// page.
fn redirect_after(state: &AppState, to: &str, done: ApiResult<String>) -> PageResult {
    let flash = match done {
        Ok(message) => Flash::ok(message),
        Err(problem) if problem.status_code().is_client_error() => {
            Flash::error(page::readable(&problem))
        }
        Err(problem) => return Err(problem.into()),
    };
    Ok(session::redirect_with(state, to, flash))
}

async fn home(user: ConsoleUser) -> Response {
    let to = if user.can(keyward_core::AccountPermission::ManageApiCredentials) {
        "/credentials"
    } else {
        "/account"
    };
    page::redirect(to)
}

const STYLESHEET: &str = include_str!("../../assets/console.css");
const SCRIPT: &str = include_str!("../../assets/console.js");

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// The 404 and 405 of everything outside `/v1`: a page, not a problem
/// document.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    ErrorPage::new(status, message).into_response()
}
