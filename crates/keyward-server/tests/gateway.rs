//! Gateway mode over HTTP: a real server's gateway listener in front of an
//! echo upstream (`common::upstream`), on both stores. What the upstream
//! received is what the gateway forwarded.

mod common;

use common::upstream::SLOW_PATH;
use common::{TestServer, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

on_both_stores!(
    a_verified_request_reaches_the_upstream_with_identity_and_without_the_key,
    denials_are_problems_and_never_reach_the_upstream,
    requests_outside_the_routes_are_refused_before_verification,
    rate_limits_answer_429_at_the_gateway,
    a_revoked_key_is_refused_at_once,
    behind_a_trusted_proxy_allowlists_see_the_forwarded_client,
    upstream_failures_are_502_and_504,
    a_route_naming_its_customer_refuses_other_customers_keys,
);

async fn send(
    server: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request =
        reqwest::Client::new().request(method, format!("{}{path}", server.gateway_base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request")
}

/// Issues a production key with `permissions` (catalogued first).
async fn key_with(server: &TestServer, permissions: &[&str], extra: Value) -> (Value, String) {
    server.catalog(permissions).await;
    let mut body =
        json!({"name": "gateway client", "environment": "production", "permissions": permissions});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    server.issue(body).await
}

/// The problem document of a denial, after checking its status and type.
async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    response.json().await.unwrap()
}

async fn a_verified_request_reaches_the_upstream_with_identity_and_without_the_key(
    server: TestServer,
) {
    let (key, secret) = key_with(&server, &["orders:read"], json!({"customer_id": "cus_42"})).await;
    let bearer = format!("Bearer {secret}");
    let response = send(
        &server,
        Method::GET,
        "/orders/7?expand=items",
        &[
            ("authorization", &bearer),
            ("keyward-key-id", "key_forged"),
            ("keyward-customer-id", "cus_forged"),
            ("keyward-scopes", "admin:all"),
            ("x-request-tag", "kept"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["uri"], "/orders/7?expand=items");
    let headers = &seen["headers"];
    assert!(headers.get("authorization").is_none(), "{headers}");
    assert!(
        headers.get("keyward-scopes").is_none(),
        "a client's Keyward-* header went through"
    );
    assert_eq!(headers["keyward-key-id"], json!([key["id"]]));
    assert_eq!(headers["keyward-customer-id"], json!(["cus_42"]));
    assert_eq!(
        headers["keyward-workspace-id"],
        json!([server.owner.workspace_id])
    );
    assert_eq!(headers["keyward-environment"], json!(["production"]));
    assert_eq!(headers["x-request-tag"], json!(["kept"]));
    assert_eq!(headers["x-forwarded-for"], json!(["127.0.0.1"]));

    // The same key as X-API-Key, on a route that needs no permission.
    let response = send(
        &server,
        Method::POST,
        "/public/a/b",
        &[("x-api-key", &secret)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["method"], "POST");
    assert!(seen["headers"].get("x-api-key").is_none());
    assert_eq!(server.upstream.hits(), 2);

    // The gateway's verifications are in the request log like any other.
    let path = format!("/v1/keys/{}/logs", key["id"].as_str().unwrap());
    let logged = eventually(Duration::from_secs(10), || async {
        let (status, page) = server.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let entries = page["data"].as_array().cloned().unwrap_or_default();
        (entries.len() == 2).then_some(entries)
    })
    .await;
    assert!(
        logged.iter().all(|entry| entry["code"] == "valid"),
        "{logged:?}"
    );
    // Newest first; the path without its query.
    let requests: Vec<(&Value, &Value)> =
        logged.iter().map(|e| (&e["method"], &e["path"])).collect();
    assert_eq!(
        requests,
        [
            (&json!("POST"), &json!("/public/a/b")),
            (&json!("GET"), &json!("/orders/7"))
        ]
    );
}

async fn denials_are_problems_and_never_reach_the_upstream(server: TestServer) {
    let (_, reader) = key_with(&server, &["orders:read"], json!({})).await;
    let (_, staging) = server
        .issue(json!({"name": "staging", "environment": "staging", "permissions": ["orders:read"]}))
        .await;
    let other = server.new_tenant().await;
    let (_, theirs) = server
        .issue_as(
            &other,
            json!({"name": "theirs", "environment": "production"}),
        )
        .await;

    let none = send(&server, Method::GET, "/orders/1", &[]).await;
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let body = problem(none, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["code"], "malformed_key");
    assert_eq!(body["type"], "urn:keyward:problem:malformed_key");
    assert!(body["detail"].as_str().unwrap().contains("X-API-Key"));

    for (secret, status, code) in [
        ("kw_live_garbage", StatusCode::UNAUTHORIZED, "malformed_key"),
        (theirs.as_str(), StatusCode::UNAUTHORIZED, "unknown_key"),
        (
            staging.as_str(),
            StatusCode::UNAUTHORIZED,
            "wrong_environment",
        ),
        (
            server.owner.token.as_str(),
            StatusCode::UNAUTHORIZED,
            "unknown_key",
        ),
    ] {
        let response = send(&server, Method::GET, "/orders/1", &[("x-api-key", secret)]).await;
        let body = problem(response, status).await;
        assert_eq!(body["code"], code, "{body}");
        assert!(!body.to_string().contains(secret), "the secret is echoed");
    }
    let bearer = format!("Bearer {reader}");
    let response = send(
        &server,
        Method::DELETE,
        "/orders/1",
        &[("authorization", &bearer)],
    )
    .await;
    let body = problem(response, StatusCode::FORBIDDEN).await;
    assert_eq!(body["code"], "insufficient_permissions");
    assert_eq!(server.upstream.hits(), 0, "a denial was forwarded");
}

async fn requests_outside_the_routes_are_refused_before_verification(server: TestServer) {
    let (_, secret) = key_with(&server, &["orders:read"], json!({})).await;
    let key = [("x-api-key", secret.as_str())];
    let unrouted = send(&server, Method::GET, "/admin/users", &key).await;
    assert_eq!(
        problem(unrouted, StatusCode::NOT_FOUND).await["code"],
        "route_not_found"
    );
    let wrong_method = send(&server, Method::POST, "/orders/1", &key).await;
    assert_eq!(wrong_method.headers()["allow"], "GET, DELETE");
    assert_eq!(
        problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await["code"],
        "method_not_allowed"
    );
    // HTTP clients normalize dot segments away, so this one is written by hand.
    for path in [
        "/public/../orders/1",
        "/public/%2e%2e/orders/1",
        "/public//x",
        "/public/a%2Fb",
    ] {
        let status_line = raw_status_line(&server.gateway_base, path, &secret).await;
        assert!(
            status_line.starts_with("HTTP/1.1 400"),
            "{path}: {status_line}"
        );
    }
    assert_eq!(server.upstream.hits(), 0);
}

/// Sends `GET <path>` exactly as written; returns the status line.
async fn raw_status_line(base: &str, path: &str, secret: &str) -> String {
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nX-API-Key: {secret}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

async fn rate_limits_answer_429_at_the_gateway(server: TestServer) {
    let (_, secret) = key_with(
        &server,
        &["orders:read"],
        json!({"rate_limit": {"limit": 2, "window_seconds": 60}}),
    )
    .await;
    let key = [("x-api-key", secret.as_str())];
    for remaining in ["1", "0"] {
        let response = send(&server, Method::GET, "/orders/1", &key).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["ratelimit-policy"], "\"key\";q=2;w=60");
        let current = response.headers()["ratelimit"].to_str().unwrap().to_owned();
        assert!(
            current.starts_with(&format!("\"key\";r={remaining};")),
            "{current}"
        );
    }
    let limited = send(&server, Method::GET, "/orders/1", &key).await;
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        problem(limited, StatusCode::TOO_MANY_REQUESTS).await["code"],
        "rate_limited"
    );
    assert_eq!(server.upstream.hits(), 2);
}

async fn a_revoked_key_is_refused_at_once(server: TestServer) {
    let (key, secret) = key_with(&server, &["orders:read"], json!({})).await;
    let key_header = [("x-api-key", secret.as_str())];
    let allowed = send(&server, Method::GET, "/orders/1", &key_header).await;
    assert_eq!(allowed.status(), StatusCode::OK);
    let revoke = format!("/v1/keys/{}/revoke", key["id"].as_str().unwrap());
    let (status, body) = server.post(&revoke, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refused = send(&server, Method::GET, "/orders/1", &key_header).await;
    assert_eq!(
        problem(refused, StatusCode::UNAUTHORIZED).await["code"],
        "key_revoked"
    );
    assert_eq!(server.upstream.hits(), 1);
}

async fn upstream_failures_are_502_and_504(mut server: TestServer) {
    let (_, secret) = key_with(&server, &[], json!({})).await;
    let key = [("x-api-key", secret.as_str())];
    let slow = send(&server, Method::GET, SLOW_PATH, &key).await;
    assert_eq!(
        problem(slow, StatusCode::GATEWAY_TIMEOUT).await["code"],
        "upstream_timeout"
    );

    server.upstream.stop();
    let down = eventually(Duration::from_secs(10), || async {
        let response = send(&server, Method::GET, "/public/x", &key).await;
        (response.status() == StatusCode::BAD_GATEWAY).then_some(response)
    })
    .await;
    assert_eq!(
        problem(down, StatusCode::BAD_GATEWAY).await["code"],
        "upstream_unavailable"
    );
    let metrics = server.metrics().await;
    for outcome in ["upstream_timeout", "upstream_unavailable"] {
        let series = format!("keyward_gateway_requests_total{{outcome=\"{outcome}\"}}");
        assert!(metrics.contains(&series), "{series} missing from {metrics}");
    }
}

async fn behind_a_trusted_proxy_allowlists_see_the_forwarded_client(server: TestServer) {
    // The test gateway trusts 127.0.0.1, the address every test request
    // comes from, as it would trust its load balancer.
    let (_, secret) = key_with(
        &server,
        &["orders:read"],
        json!({"allowed_ips": ["203.0.113.0/24"]}),
    )
    .await;
    let through = |forwarded: &'static str| {
        let secret = secret.clone();
        let server = &server;
        async move {
            let mut headers = vec![("x-api-key", secret.as_str())];
            if !forwarded.is_empty() {
                headers.push(("x-forwarded-for", forwarded));
            }
            send(server, Method::GET, "/orders/1", &headers).await
        }
    };
    let allowed = through("198.51.100.1, 203.0.113.7").await;
    assert_eq!(allowed.status(), StatusCode::OK);
    let seen: Value = allowed.json().await.unwrap();
    assert_eq!(seen["headers"]["x-forwarded-proto"], json!(["http"]));
    // The trusted proxy terminated TLS: its scheme stands.
    let headers = [
        ("x-api-key", secret.as_str()),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
    ];
    let https: Value = send(&server, Method::GET, "/orders/1", &headers)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(https["headers"]["x-forwarded-proto"], json!(["https"]));
    assert_eq!(seen["headers"]["keyward-client-ip"], json!(["203.0.113.7"]));
    assert_eq!(
        seen["headers"]["x-forwarded-for"],
        json!(["198.51.100.1, 203.0.113.7, 127.0.0.1"])
    );
    // Only the right-most untrusted entry counts: one written further
    // left, by the client, is not believed.
    for forwarded in ["203.0.113.7, 198.51.100.1", ""] {
        let refused = through(forwarded).await;
        assert_eq!(
            problem(refused, StatusCode::FORBIDDEN).await["code"],
            "ip_not_allowed",
            "X-Forwarded-For: {forwarded:?}"
        );
    }
}

/// A route may name the path parameter that says which customer a request
/// acts for (SPEC §3's customer scope); the gateway and the embedded layer
/// refuse a key scoped to another customer, and nothing else changes.
async fn a_route_naming_its_customer_refuses_other_customers_keys(server: TestServer) {
    let (_, acme) = key_with(&server, &["orders:read"], json!({"customer_id": "acme:eu"})).await;
    let (_, unscoped) = server
        .issue(json!({"name": "any customer", "environment": "production", "permissions": ["orders:read"]}))
        .await;
    // Each request: the key, and the `X-Customer-Id` values it sends.
    let headers = |secret: &str, customers: &[&str]| {
        let mut headers = vec![("x-api-key".to_owned(), secret.to_owned())];
        headers.extend(
            customers
                .iter()
                .map(|c| ("x-customer-id".to_owned(), (*c).to_owned())),
        );
        headers
    };
    let gateway = |path: &'static str, headers: Vec<(String, String)>| {
        let server = &server;
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let response = send(server, Method::GET, path, &headers).await;
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let layer = |path: &'static str, headers: Vec<(String, String)>| {
        let url = format!("{}{path}", server.app.base);
        async move {
            let mut request = reqwest::Client::new().get(url);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let mismatch = (StatusCode::FORBIDDEN, Some("customer_mismatch"));
    let admitted = (StatusCode::OK, None);
    for (path, secret, customers, (status, code)) in [
        ("/customers/acme%3Aeu/orders", &acme, &[][..], admitted),
        ("/customers/acme:eu/orders", &acme, &[], admitted),
        ("/customers/globex/orders", &acme, &[], mismatch),
        ("/customers/%FF/orders", &acme, &[], mismatch),
        ("/orders/1", &acme, &[], admitted),
        ("/customers/globex/orders", &unscoped, &[], admitted),
        // A route naming its customer in a header.
        ("/invoices", &acme, &["acme:eu"], admitted),
        ("/invoices", &acme, &["globex"], mismatch),
        ("/invoices", &acme, &[], mismatch),
        ("/invoices", &acme, &["acme:eu", "globex"], mismatch),
        ("/invoices", &unscoped, &["globex"], admitted),
        ("/invoices", &unscoped, &[], admitted),
    ] {
        for (through, (answered, body)) in [
            ("gateway", gateway(path, headers(secret, customers)).await),
            ("layer", layer(path, headers(secret, customers)).await),
        ] {
            assert_eq!(answered, status, "{through} {path} {customers:?}: {body}");
            if let Some(code) = code {
                assert_eq!(body["code"], code, "{through} {path} {customers:?}");
            }
        }
    }
    assert_eq!(
        server.upstream.hits(),
        7,
        "only admitted requests forwarded"
    );
    // The upstream reads the customer from the header it was checked by.
    let (_, seen) = gateway("/invoices", headers(&acme, &["acme:eu"])).await;
    assert_eq!(seen["headers"]["x-customer-id"], json!(["acme:eu"]));
    assert_eq!(seen["headers"]["keyward-customer-id"], json!(["acme:eu"]));
}
