//! The HTTP API: routes, the OpenAPI document built from the same route
//! declarations (so the two cannot drift), and the cross-cutting layers.

pub(crate) mod allowlist;
pub(crate) mod audit;
pub(crate) mod integrations;
pub(crate) mod jobs;
pub(crate) mod keys;
pub(crate) mod logs;
pub(crate) mod members;
mod openapi;
pub(crate) mod permissions;
pub(crate) mod secret_scanning;
pub(crate) mod tokens;
mod verify;
pub(crate) use verify::PrivateVerify;
pub mod views;
pub(crate) mod workspaces;

use crate::AppState;
use crate::extract::MAX_BODY_BYTES;
use crate::idempotency;
use crate::invalidate;
use crate::problem::{Problem, ProblemDocument};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use futures_util::future::Either;
use keyward_core::InvalidValue;
use serde::Serialize;
use std::convert::Infallible;
use std::task::{Context, Poll};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A `201 Created` JSON response.
pub struct Created<T>(pub T);

impl<T: Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        (StatusCode::CREATED, Json(self.0)).into_response()
    }
}

/// Maps a core validation error to a 400 naming `name`.
pub(crate) fn field(name: impl Into<String>) -> impl FnOnce(InvalidValue) -> Problem {
    let name = name.into();
    move |e| Problem::invalid(name, e.message)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Keyward API", version = "1", description = "Issue, manage and verify API keys."),
    modifiers(&BearerAuth),
    security(("management_token" = [])),
    tags(
        (name = "workspaces", description = "Workspaces and their environments"),
        (name = "keys", description = "API keys"),
        (name = "permissions", description = "The account's permission catalog"),
        (name = "integrations", description = "Which credentials each integration uses"),
        (name = "jobs", description = "Background jobs: bulk operations and scheduled sweeps"),
        (name = "ip-allowlist", description = "Addresses allowed to use each workspace's keys"),
        (name = "members", description = "People in the account"),
        (name = "management-tokens", description = "Tokens for automating this API"),
        (name = "audit", description = "Who changed what, tamper-evident"),
        (name = "verify", description = "Checking a key on each request"),
        (name = "logs", description = "Every verification outcome"),
        (name = "secret-scanning", description = "Secrets found in public, reported by GitHub"),
    ),
    components(schemas(ProblemDocument))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "management_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every `/v1` route but verification, under the document's header.
fn management_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(workspaces::list, workspaces::create))
        .routes(routes!(
            workspaces::get,
            workspaces::update,
            workspaces::delete
        ))
        .routes(routes!(
            workspaces::list_environments,
            workspaces::create_environment
        ))
        .routes(routes!(keys::list, keys::create))
        .routes(routes!(keys::import))
        .routes(routes!(keys::get, keys::update, keys::delete))
        .routes(routes!(keys::disable))
        .routes(routes!(keys::enable))
        .routes(routes!(keys::revoke))
        .routes(routes!(keys::rotate))
        .routes(routes!(keys::end_grace))
        .routes(routes!(keys::leaks))
        .routes(routes!(keys::change_credits))
        .routes(routes!(integrations::list, integrations::create))
        .routes(routes!(
            integrations::get,
            integrations::update,
            integrations::delete
        ))
        .routes(routes!(jobs::list, jobs::create))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::secrets))
        .routes(routes!(jobs::export))
        .routes(routes!(permissions::list, permissions::create))
        .routes(routes!(permissions::delete))
        .routes(routes!(allowlist::list, allowlist::create))
        .routes(routes!(allowlist::delete))
        .routes(routes!(members::list, members::create))
        .routes(routes!(members::update, members::delete))
        .routes(routes!(audit::list))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::delete))
        .routes(routes!(logs::list))
        .routes(routes!(logs::list_for_key))
        .routes(routes!(secret_scanning::github))
}

/// `POST /v1/verify`, the one route on every request of every customer. It
/// changes nothing and takes no `Idempotency-Key`, so it is routed outside
/// those two layers: each costs a boxed service clone and a boxed future
/// per request.
fn verify_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(verify::verify))
}

/// The OpenAPI 3.1 document served at `/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = management_routes().split_for_parts().1;
    openapi::complete(&mut document, openapi::Layers::Management);
    let mut verify = verify_routes().split_for_parts().1;
    openapi::complete(&mut verify, openapi::Layers::Verify);
    document.merge(verify);
    document
}

/// What a listener serves: `POST /v1/verify`, the one route on every
/// request of every customer, handed straight to its handler inside the
/// layers the router gives every route (trace, body limit); anything else
/// through the router, the verify route included for every other method
/// and the exact same answers. Routing cost a verification about 4,700
/// instructions, a tenth of it (`scripts/instructions.sh`): axum's matched
/// path and URL parameters are an extension each, inserted into a map made
/// for them, and the route's boxed service and future.
#[derive(Clone)]
pub(crate) struct Listening {
    verify: Option<VerifyLane>,
    router: Router,
}

/// The verify handler with its state and layers.
type VerifyLane = BoxCloneSyncService<Request, Response, Infallible>;

impl Listening {
    /// The admin API.
    pub(crate) fn api(state: AppState) -> Self {
        Self {
            verify: Some(verify_lane(verify::verify, state.clone())),
            router: router(state),
        }
    }

    /// The private verify listener (see [`private_verify_router`]).
    pub(crate) fn private_verify(listener: PrivateVerify) -> Self {
        Self {
            verify: Some(verify_lane(verify::verify_private, listener.clone())),
            router: private_verify_router(listener),
        }
    }

    /// A router on its own (the gateway's).
    pub(crate) fn router_only(router: Router) -> Self {
        Self {
            verify: None,
            router,
        }
    }
}

fn verify_lane<H, T, S>(handler: H, state: S) -> VerifyLane
where
    H: Handler<T, S> + Sync,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .map_response(IntoResponse::into_response)
            .layer(TraceLayer::new_for_http())
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .service(handler.with_state(state)),
    )
}

impl tower::Service<Request> for Listening {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        <VerifyLane as tower::Service<Request>>::Future,
        <Router as tower::Service<Request>>::Future,
    >;

    /// Always ready: so are the router and the handler's layers, which is
    /// why `call` may call either without asking them first.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let is_verify = request.method() == Method::POST && request.uri().path() == "/v1/verify";
        match &mut self.verify {
            Some(lane) if is_verify => Either::Left(lane.call(request)),
            _ => Either::Right(self.router.call(request)),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let document = std::sync::Arc::new(openapi());
    let (verify, _) = verify_routes().split_for_parts();
    let (management, _) = management_routes().split_for_parts();
    management
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_during_outage,
        ))
        .route(
            "/v1/openapi.json",
            get(move || async move { Json(document.as_ref().clone()) }),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::console::routes())
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::middleware,
        ))
        // Outside the idempotency layer, whose authentication must fill the
        // slot this one reads.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            invalidate::middleware,
        ))
        .merge(verify.method_not_allowed_fallback(method_not_allowed))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The private verify listener's router: `POST /v1/verify` without a token,
/// for the one account in `listener`, and `/healthz`. Nothing else is
/// reachable through it, so binding it to a private network exposes no
/// admin route.
fn private_verify_router(listener: PrivateVerify) -> Router {
    Router::new()
        .route("/v1/verify", post(verify::verify_private))
        .route("/healthz", get(healthz))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(route_not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(listener)
}

/// Prometheus text exposition of the process's metrics (see
/// docs/PERFORMANCE.md for the catalogue). Unauthenticated, like the
/// probes: expose it to the scraper's network only.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = state.metrics.render();
            state.verifier.render_metrics(&mut text);
            text
        },
    )
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Ready when the store answers.
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, Problem> {
    state.store.ping().await?;
    Ok(Json(
        serde_json::json!({"status": "ready", "store": state.store.backend()}),
    ))
}

/// During a store outage an admin request is answered at once: it would
/// otherwise wait for a connection the pool cannot make (30 s) or for a
/// partitioned network, only to fail the same way. The outage ends with
/// the first store read that succeeds (the probe tries every 500 ms).
async fn refuse_during_outage(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    if !state.verifier.outage().is_ongoing() {
        return next.run(request).await;
    }
    let mut response = Problem::storage_unavailable().into_response();
    let retry = axum::http::HeaderValue::from_static("1");
    response
        .headers_mut()
        .insert(axum::http::header::RETRY_AFTER, retry);
    response
}

/// A problem under `/v1` (API clients), a page elsewhere (people).
async fn not_found(uri: axum::http::Uri) -> Response {
    if !uri.path().starts_with("/v1/") {
        return crate::console::error_page(StatusCode::NOT_FOUND, "There is no page here.");
    }
    route_not_found().await
}

async fn route_not_found() -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "no such endpoint; see /v1/openapi.json",
    )
    .into_response()
}

async fn method_not_allowed(uri: axum::http::Uri) -> Response {
    if !uri.path().starts_with("/v1/") {
        return crate::console::error_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "This page cannot be used that way. Go back and use its buttons.",
        );
    }
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{AccountSetup, create_account};
    use crate::{Server, ServerConfig};
    use axum::body::Body;
    use axum::http::header;
    use keyward_core::KeyFormat;
    use tower::ServiceExt;

    /// What a client sees of an answer: status, the headers the verify
    /// route sets, and the body.
    async fn seen(response: Response) -> (StatusCode, Vec<Option<String>>, String) {
        let headers = [
            header::CONTENT_TYPE,
            header::CACHE_CONTROL,
            header::WWW_AUTHENTICATE,
        ]
        .map(|name| {
            let value = response.headers().get(name);
            value.and_then(|v| v.to_str().ok()).map(str::to_owned)
        })
        .to_vec();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await;
        (
            status,
            headers,
            String::from_utf8_lossy(&body.unwrap()).into_owned(),
        )
    }

    /// The verify lane answers every kind of `POST /v1/verify` exactly as
    /// the router does: its layers must stay the router's (a layer added to
    /// one and not the other fails this; without the lane's body limit, the
    /// oversized body passed).
    #[tokio::test]
    async fn the_verify_lane_answers_as_the_router_does() {
        let store = keyward_store::open("sqlite::memory:").await.unwrap();
        let format = KeyFormat::default();
        let created = create_account(
            store.as_ref(),
            &format,
            AccountSetup {
                account_name: "Lane".into(),
                owner_email: "lane@example.com".into(),
                owner_password: zeroize::Zeroizing::new("correct horse battery".into()),
                workspace_name: "Lane".into(),
            },
        )
        .await
        .unwrap();
        let server = Server::with_config(store, format, ServerConfig::default());
        let token = format!("Bearer {}", created.management_token.expose());
        let unknown_key = r#"{"key": "kw_live_00000000000000000000000000000000000000"}"#;
        let too_large = format!(
            r#"{{"key": "{}"}}"#,
            "x".repeat(crate::extract::MAX_BODY_BYTES)
        );
        let requests = [
            (None, "application/json", unknown_key.to_owned()),
            (Some(&token), "text/plain", unknown_key.to_owned()),
            (Some(&token), "application/json", "{not json".to_owned()),
            (Some(&token), "application/json", r#"{"key": 1}"#.to_owned()),
            (Some(&token), "application/json", too_large),
            (Some(&token), "application/json", unknown_key.to_owned()),
            (
                Some(&token),
                "application/json",
                r#"{"key": "not-a-key"}"#.to_owned(),
            ),
        ];
        let router = router(server.state.clone());
        let lane = Listening::api(server.state.clone());
        let mut statuses = std::collections::BTreeSet::new();
        for (authorization, content_type, body) in requests {
            let request = || {
                let mut request =
                    Request::post("/v1/verify").header(header::CONTENT_TYPE, content_type);
                if let Some(authorization) = authorization {
                    request = request.header(header::AUTHORIZATION, authorization);
                }
                request.body(Body::from(body.clone())).unwrap()
            };
            let through_router = seen(router.clone().oneshot(request()).await.unwrap()).await;
            let through_lane = seen(lane.clone().oneshot(request()).await.unwrap()).await;
            assert_eq!(through_lane, through_router, "{content_type} {:.40}", body);
            statuses.insert(through_router.0.as_u16());
        }
        assert_eq!(
            statuses.into_iter().collect::<Vec<_>>(),
            [200, 400, 401, 413, 415]
        );
    }
}
