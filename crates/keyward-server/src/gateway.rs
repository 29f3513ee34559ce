//! Gateway mode (`keyward proxy`, SPEC §5): a reverse proxy in front of the
//! platform's own HTTP API. For each request it finds the route (method +
//! path → permissions, deny by default), verifies the presented key with
//! the same [`crate::verifier::Verifier`] as `POST /v1/verify` (cache,
//! invalidation, rate limits, request logs), and then either answers the
//! denial itself as an RFC 9457 problem or forwards the request without the
//! credential and with the key's identity in `Keyward-*` headers.
//!
//! The upstream can trust those headers because the gateway removes every
//! `Keyward-*` header a client sent; it must only be reachable through the
//! gateway for that to hold.

use crate::AppState;
use crate::problem::Problem;
use crate::request_check::{
    Refusal, RequestCheck, RouteDemand, X_FORWARDED_FOR, customer_in, remove_credential,
};
use crate::telemetry as m;
use crate::verifier::Verdict;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::{Authority, PathAndQuery, Scheme, Uri};
use axum::http::{StatusCode, Version};
use axum::response::{IntoResponse, Response};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;
use keyward_core::gateway::{CustomerSource, RouteMatch, RouteTable, check_request_path};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

mod tls;

pub use tls::UpstreamTls;

/// What an operator configures for one gateway.
pub struct GatewayConfig {
    /// The account whose keys are accepted: any other account's keys are
    /// `unknown_key`.
    pub account_id: String,
    pub upstream: Upstream,
    pub routes: RouteTable,
    /// How long the upstream may take to start its answer.
    pub upstream_timeout: Duration,
    /// Proxies of the operator's own in front of the gateway (a load
    /// balancer): from them, the client's address is taken from
    /// `X-Forwarded-For` (see [`client_address`]); from anyone else, it is
    /// the peer's.
    pub trusted_proxies: Vec<IpNet>,
    /// Whom an `https://` upstream's certificate must be issued by.
    pub upstream_tls: UpstreamTls,
}

/// Where requests go: `http[s]://host[:port][/base]`. A request for `/p?q`
/// goes to `http[s]://host:port/base/p?q`.
#[derive(Debug, Clone)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    base_path: String,
}

impl std::str::FromStr for Upstream {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let scheme = match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS => scheme.clone(),
            _ => {
                return Err(format!(
                    "{url:?}: the upstream must be an http:// or https:// URL"
                ));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{url:?} has no host"))?
            .clone();
        if authority.as_str().contains('@') {
            return Err(format!("{url:?}: credentials in the URL are not supported"));
        }
        if uri.query().is_some() {
            return Err(format!("{url:?}: the upstream URL takes no query"));
        }
        Ok(Self {
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

impl Upstream {
    /// Whether the hop to the upstream is TLS (then its certificate is
    /// verified against [`UpstreamTls`]).
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    fn uri_for(&self, path_and_query: &str) -> Result<Uri, axum::http::Error> {
        let path = PathAndQuery::try_from(format!("{}{path_and_query}", self.base_path))?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
    }
}

pub(crate) struct Gateway {
    check: RequestCheck,
    upstream: Upstream,
    routes: RouteTable,
    upstream_timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Body>,
}

/// The identity headers the upstream receives (and that a client can
/// never send through).
const KEY_ID: HeaderName = HeaderName::from_static("keyward-key-id");
const WORKSPACE_ID: HeaderName = HeaderName::from_static("keyward-workspace-id");
const ENVIRONMENT: HeaderName = HeaderName::from_static("keyward-environment");
const CUSTOMER_ID: HeaderName = HeaderName::from_static("keyward-customer-id");
/// The client's address as the allowlists saw it (see [`Gateway::client_ip`]).
const CLIENT_IP: HeaderName = HeaderName::from_static("keyward-client-ip");
const IDENTITY_PREFIX: &str = "keyward-";
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Connection-level headers (RFC 9110 §7.6.1): they describe one hop and
/// are never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

impl Gateway {
    pub(crate) fn new(state: AppState, config: GatewayConfig) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(config.upstream_timeout));
        // The TLS layer below takes https:// URIs through it.
        tcp.enforce_http(false);
        let tls = HttpsConnectorBuilder::new().with_tls_config(config.upstream_tls.client_config());
        // Every URI the gateway sends carries the upstream's own scheme: an
        // http:// upstream never starts TLS, and an https:// one is never
        // reached in plain text.
        let connector = if config.upstream.is_https() {
            tls.https_only()
        } else {
            tls.https_or_http()
        }
        .enable_http1()
        .wrap_connector(tcp);
        Self {
            check: RequestCheck {
                state,
                account_id: config.account_id,
                environment: config.routes.environment().map(str::to_owned),
                trusted_proxies: config.trusted_proxies,
            },
            upstream: config.upstream,
            routes: config.routes,
            upstream_timeout: config.upstream_timeout,
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    async fn handle(&self, peer: SocketAddr, request: Request) -> (Outcome, Response) {
        let path = request.uri().path();
        if let Err(fault) = check_request_path(path) {
            let problem = Problem::new(StatusCode::BAD_REQUEST, "invalid_path", fault.to_string());
            return (Outcome::Refused, problem.into_response());
        }
        let (route, customer_id) = match self.routes.find(request.method().as_str(), path) {
            RouteMatch::Found { route, customer_id } => (route, customer_id),
            RouteMatch::NotFound => {
                let problem = Problem::new(
                    StatusCode::NOT_FOUND,
                    "route_not_found",
                    format!("no gateway route for {} {path}", request.method()),
                );
                return (Outcome::Refused, problem.into_response());
            }
            RouteMatch::MethodNotAllowed(methods) => {
                let response = method_not_allowed(request.method().as_str(), &methods);
                return (Outcome::Refused, response);
            }
        };
        let customer_id = match &route.customer {
            Some(CustomerSource::Header(name)) => Some(customer_in(request.headers(), name).into()),
            _ => customer_id,
        };
        let checked = self
            .check
            .verify(
                Some(peer.ip()),
                request.method(),
                path,
                request.headers(),
                RouteDemand {
                    permissions: &route.permissions,
                    customer_id: customer_id.as_deref(),
                    cost: route.cost,
                },
            )
            .await;
        let admitted = match checked {
            Ok(admitted) => admitted,
            Err(refusal @ Refusal::Denied(_)) => return (Outcome::Denied, refusal.into_response()),
            Err(refusal @ Refusal::StorageUnavailable(_)) => {
                return (Outcome::StorageUnavailable, refusal.into_response());
            }
        };
        // The gateway always knows its peer, so the check had an address.
        let client_ip = admitted.client_ip.unwrap_or(peer.ip());
        match self
            .forward(request, &admitted.verdict, peer.ip(), client_ip)
            .await
        {
            Ok(mut response) => {
                if let Some(state) = &admitted.verdict.rate_limit {
                    state.write_headers(response.headers_mut());
                }
                (Outcome::Forwarded, response)
            }
            Err(failure) => (failure.outcome(), failure.into_response()),
        }
    }

    async fn forward(
        &self,
        request: Request,
        verdict: &Verdict,
        peer_ip: IpAddr,
        client_ip: IpAddr,
    ) -> Result<Response, UpstreamFailure> {
        let (mut parts, body) = request.into_parts();
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        // The path passed `check_request_path` and the base is a parsed
        // URL's path, so the joined URI always parses.
        let Ok(uri) = self.upstream.uri_for(path_and_query) else {
            return Err(UpstreamFailure::Unavailable);
        };
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let original_host = parts.headers.remove(header::HOST);
        strip_request_headers(&mut parts.headers);
        let headers = &mut parts.headers;
        // A trusted proxy's word on the original host and scheme (it
        // terminated TLS, say) stands; anyone else's is replaced.
        let keep_forwarded = self.check.is_trusted_proxy(peer_ip);
        if let Some(host) = original_host
            && !(keep_forwarded && headers.contains_key(X_FORWARDED_HOST))
        {
            headers.insert(X_FORWARDED_HOST, host);
        }
        if !(keep_forwarded && headers.contains_key(X_FORWARDED_PROTO)) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        append_forwarded_for(headers, peer_ip.to_canonical());
        if let Some(key) = &verdict.key {
            identify(headers, key.record());
        }
        if let Ok(client) = HeaderValue::try_from(client_ip.to_string()) {
            headers.insert(CLIENT_IP, client);
        }
        let sent = self.client.request(Request::from_parts(parts, body));
        let answer = match tokio::time::timeout(self.upstream_timeout, sent).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                tracing::warn!(%error, "upstream request failed");
                return Err(UpstreamFailure::Unavailable);
            }
            Err(_) => return Err(UpstreamFailure::TimedOut),
        };
        let (mut parts, body) = answer.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

/// Why a verified request got no answer from the upstream.
enum UpstreamFailure {
    Unavailable,
    TimedOut,
}

impl UpstreamFailure {
    fn outcome(&self) -> Outcome {
        match self {
            Self::Unavailable => Outcome::UpstreamUnavailable,
            Self::TimedOut => Outcome::UpstreamTimeout,
        }
    }
}

impl IntoResponse for UpstreamFailure {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::Unavailable => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the upstream API could not be reached",
            ),
            Self::TimedOut => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the upstream API did not answer in time",
            ),
        };
        problem.into_response()
    }
}

/// Serves every path of the gateway's listener.
pub(crate) fn router(gateway: Arc<Gateway>) -> Router {
    Router::new().fallback(proxy).with_state(gateway)
}

async fn proxy(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (outcome, response) = gateway.handle(peer, request).await;
    metrics::counter!(m::GATEWAY_REQUESTS, "outcome" => outcome.as_str()).increment(1);
    response
}

/// What became of a gateway request, for [`m::GATEWAY_REQUESTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Forwarded,
    /// The verification refused the key.
    Denied,
    /// No route, or a refused path: never verified.
    Refused,
    UpstreamUnavailable,
    UpstreamTimeout,
    StorageUnavailable,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::Denied => "denied",
            Self::Refused => "refused",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::StorageUnavailable => "storage_unavailable",
        }
    }
}

fn method_not_allowed(method: &str, allowed: &[&str]) -> Response {
    let mut response = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("no gateway route for {method} on this path"),
    )
    .into_response();
    // A "*" route would have matched, so every entry is a method.
    if let Ok(allow) = HeaderValue::try_from(allowed.join(", ")) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

/// Removes what must not reach the upstream: the credential, hop-by-hop
/// headers (and those the `Connection` header names), and any identity
/// header a client tried to send.
fn strip_request_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    remove_credential(headers);
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(IDENTITY_PREFIX))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, client_ip: IpAddr) {
    let prior = headers
        .get(X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let value = match prior {
        Some(prior) => format!("{prior}, {client_ip}"),
        None => client_ip.to_string(),
    };
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// The key's identity, for the upstream to act on. Every value comes from
/// validated ids and names (printable ASCII), so none is refused.
fn identify(headers: &mut HeaderMap, key: &keyward_store::VerificationRecord) {
    let key = &key.key;
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(KEY_ID, &key.id);
    set(WORKSPACE_ID, &key.workspace_id);
    set(ENVIRONMENT, &key.environment);
    if let Some(customer) = &key.customer_id {
        set(CUSTOMER_ID, customer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let upstream: Upstream = "http://127.0.0.1:9000/api/".parse().unwrap();
        assert_eq!(
            upstream.uri_for("/orders?x=1").unwrap().to_string(),
            "http://127.0.0.1:9000/api/orders?x=1"
        );
        let bare: Upstream = "http://internal".parse().unwrap();
        assert_eq!(bare.uri_for("/").unwrap().to_string(), "http://internal/");
        let secure: Upstream = "https://api.internal:8443/v2".parse().unwrap();
        assert!(secure.is_https() && !bare.is_https());
        assert_eq!(
            secure.uri_for("/orders").unwrap().to_string(),
            "https://api.internal:8443/v2/orders"
        );
        for bad in [
            "ftp://x",
            "x:9000",
            "http://u:p@x",
            "http://x/?q=1",
            "not a url",
        ] {
            assert!(bad.parse::<Upstream>().is_err(), "{bad}");
        }
    }

    /// A route may not read its customer from a header this gateway strips
    /// or replaces: the routes file's check knows every one of them.
    #[test]
    fn routes_cannot_name_the_customer_in_a_header_the_gateway_strips() {
        let mut stripped = HOP_BY_HOP.to_vec();
        stripped.extend([header::HOST, header::AUTHORIZATION, CUSTOMER_ID]);
        stripped.push(HeaderName::from_static("x-api-key"));
        for name in stripped.iter().map(HeaderName::as_str) {
            let routes =
                format!("[[route]]\nmethod = \"GET\"\npath = \"/\"\ncustomer_header = \"{name}\"");
            let refused = RouteTable::from_toml(&routes).map(|_| ()).unwrap_err();
            assert!(
                refused.to_string().contains("customer_header"),
                "{name}: {refused}"
            );
        }
    }

    #[test]
    fn credentials_and_spoofed_identity_never_reach_the_upstream() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer kw_live_x"),
            ("x-api-key", "kw_live_y"),
            ("keyward-key-id", "key_forged"),
            ("Keyward-Customer-Id", "cus_forged"),
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("te", "trailers"),
            ("accept", "application/json"),
        ] {
            headers.append(
                HeaderName::try_from(name).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        strip_request_headers(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut headers = HeaderMap::new();
        append_forwarded_for(&mut headers, "10.0.0.1".parse().unwrap());
        append_forwarded_for(&mut headers, "::1".parse().unwrap());
        assert_eq!(headers[X_FORWARDED_FOR], "10.0.0.1, ::1");
    }
}
