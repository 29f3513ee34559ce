//! The credential lifecycle of seeds 000, 001, 003 and 004 through the real
//! HTTP API on both stores: primary credentials, the last-ingest-key guard,
//! kinds, delete with the typed name, rotation with a grace period, and
//! integrations.

mod common;

use base64::Engine as _;
use common::{TestServer, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

on_both_stores!(
    a_new_workspace_comes_with_primary_credentials,
    the_last_ingest_key_cannot_be_removed,
    deleting_needs_the_name_and_keeps_nothing_usable,
    rotation_without_grace_stops_the_old_secret_at_once,
    rotation_with_grace_keeps_both_secrets_until_it_ends,
    publishable_keys_are_public_and_bound_to_origins,
    integrations_guard_the_keys_they_use,
);

async fn delete(s: &TestServer, path: &str, body: Value) -> (StatusCode, Value) {
    s.call(&s.owner.token, Method::DELETE, path, Some(body))
        .await
}

/// A new workspace (with its primary credentials) and its id.
async fn workspace(s: &TestServer, name: &str) -> (String, Value) {
    let (status, ws) = s.post("/v1/workspaces", json!({"name": name})).await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    (
        ws["id"].as_str().unwrap().to_owned(),
        ws["primary_credentials"].clone(),
    )
}

async fn a_new_workspace_comes_with_primary_credentials(s: TestServer) {
    let (id, primary) = workspace(&s, "Shop").await;
    let key = &primary["key"];
    assert_eq!(
        (key["kind"].as_str(), key["name"].as_str()),
        (Some("ingest"), Some("Primary"))
    );
    assert_eq!(key["environment"], "production");
    let secret = primary["secret"].as_str().unwrap();
    assert!(secret.starts_with("kw_live_"));

    // The pair works as HTTP Basic Site ID + secret (seed 000).
    let site_id = key["id"].as_str().unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{site_id}:{secret}"));
    assert_eq!(
        s.code(json!({"authorization": format!("Basic {basic}")}))
            .await,
        "valid"
    );

    // Shown once: neither the workspace nor the key reveal it again.
    let (_, shown) = s.get(&format!("/v1/workspaces/{id}")).await;
    assert!(shown.get("primary_credentials").is_none(), "{shown}");
    assert!(!shown.to_string().contains(secret));
    let (_, keys) = s.get(&format!("/v1/workspaces/{id}/keys")).await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 1);
    assert!(!keys.to_string().contains(secret));
}

async fn the_last_ingest_key_cannot_be_removed(s: TestServer) {
    let (ws, primary) = workspace(&s, "Guarded").await;
    let primary_path = format!("/v1/keys/{}", primary["key"]["id"].as_str().unwrap());
    let (status, problem) = s.post(&format!("{primary_path}/revoke"), json!({})).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("last_ingest_key"))
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("create a new set"),
        "{problem}"
    );
    let (status, problem) = delete(
        &s,
        &primary_path,
        json!({"confirm_name": "Primary", "force": true}),
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("last_ingest_key"))
    );

    // A secret key is not a replacement for the workspace's ingest key…
    let keys = format!("/v1/workspaces/{ws}/keys");
    let (status, _) = s
        .post(
            &keys,
            json!({"name": "server", "environment": "production"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        s.post(&format!("{primary_path}/revoke"), json!({})).await.0,
        StatusCode::CONFLICT
    );
    // …a new ingest set is, after which the old one may go.
    let (status, second) = s
        .post(
            &keys,
            json!({"name": "Second set", "environment": "production", "kind": "ingest"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(
        delete(&s, &primary_path, json!({"confirm_name": "Primary"}))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let second_path = format!("/v1/keys/{}", second["key"]["id"].as_str().unwrap());
    let (status, problem) = s.post(&format!("{second_path}/revoke"), json!({})).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("last_ingest_key"))
    );
    // Disabling is reversible, so it stays allowed.
    assert_eq!(
        s.post(&format!("{second_path}/disable"), json!({})).await.0,
        StatusCode::OK
    );
}

async fn deleting_needs_the_name_and_keeps_nothing_usable(s: TestServer) {
    let (key, secret) = s
        .issue(json!({"name": "Main Website Integration", "environment": "production"}))
        .await;
    let path = format!("/v1/keys/{}", key["id"].as_str().unwrap());
    let (status, problem) = delete(
        &s,
        &path,
        json!({"confirm_name": "main website integration"}),
    )
    .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("confirm_name"))
    );
    let (status, problem) = delete(&s, &path, json!({})).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("confirm_name"))
    );
    assert_eq!(
        s.code(json!({"key": secret})).await,
        "valid",
        "a refused delete changes nothing"
    );

    let (status, _) = delete(
        &s,
        &path,
        json!({"confirm_name": "Main Website Integration"}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(s.get(&path).await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.code(json!({"key": secret})).await, "unknown_key");
    // Its request logs stay under its id (the verifications made before the
    // delete; afterwards the secret is unknown, so nothing names the key).
    let key_id = key["id"].as_str().unwrap().to_owned();
    let logs = eventually(Duration::from_secs(10), || async {
        let (_, logs) = s.get(&format!("/v1/logs?key_id={key_id}")).await;
        let codes: Vec<String> = logs["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["code"].as_str().unwrap().to_owned())
            .collect();
        codes.iter().any(|c| c == "valid").then_some(codes)
    })
    .await;
    assert!(logs.iter().all(|c| c == "valid"), "{logs:?}");
    assert_eq!(
        delete(
            &s,
            &path,
            json!({"confirm_name": "Main Website Integration"})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

async fn rotation_without_grace_stops_the_old_secret_at_once(s: TestServer) {
    s.catalog(&["customers:read"]).await;
    let (key, old) = s
        .issue(json!({"name": "rotate me", "environment": "production", "permissions": ["customers:read"],
                      "rate_limit": {"limit": 100, "window_seconds": 60}, "meta": {"team": "a"}}))
        .await;
    let path = format!("/v1/keys/{}", key["id"].as_str().unwrap());
    let (status, rotated) = s.post(&format!("{path}/rotate"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().unwrap();
    assert_ne!(new, old);
    for field in [
        "id",
        "name",
        "permissions",
        "rate_limit",
        "meta",
        "environment",
    ] {
        assert_eq!(rotated["key"][field], key[field], "{field} is kept");
    }
    assert_eq!(rotated["key"]["rotation"]["in_grace_period"], false);
    assert_eq!(
        s.code(json!({"key": new, "permissions": ["customers:read"]}))
            .await,
        "valid"
    );
    assert_eq!(s.code(json!({"key": old})).await, "key_expired");

    // A body-less rotate works too, and a revoked key cannot be rotated.
    let response = s
        .send(
            &s.owner.token,
            Method::POST,
            &format!("{path}/rotate"),
            None,
            &[],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    s.post(&format!("{path}/revoke"), json!({})).await;
    let (status, problem) = s.post(&format!("{path}/rotate"), json!({})).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::CONFLICT, Some("status"))
    );
    let (status, problem) = s
        .post(&format!("{path}/rotate"), json!({"grace_seconds": 604_801}))
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("grace_seconds"))
    );
}

async fn rotation_with_grace_keeps_both_secrets_until_it_ends(s: TestServer) {
    let (key, first) = s
        .issue(json!({"name": "graceful", "environment": "production"}))
        .await;
    let path = format!("/v1/keys/{}", key["id"].as_str().unwrap());
    let (_, rotated) = s
        .post(&format!("{path}/rotate"), json!({"grace_seconds": 3600}))
        .await;
    let second = rotated["secret"].as_str().unwrap().to_owned();
    let rotation = &rotated["key"]["rotation"];
    assert_eq!(rotation["in_grace_period"], true);
    assert_eq!(rotation["old_hint"], key["hint"]);
    assert!(rotation["old_secret_expires_at"].is_string());

    // Both work; the old secret's use is tracked apart from the new one's.
    assert_eq!(
        s.code(json!({"key": first, "ip": "198.51.100.1"})).await,
        "valid"
    );
    let shown = eventually(Duration::from_secs(10), || async {
        let (_, shown) = s.get(&path).await;
        shown["rotation"]["old_secret_last_used_at"]
            .is_string()
            .then_some(shown)
    })
    .await;
    assert_eq!(
        shown["last_used_at"],
        Value::Null,
        "the new secret is unused so far"
    );
    assert_eq!(s.code(json!({"key": second})).await, "valid");

    // Rotating again during the grace period: the first secret is forgotten,
    // the second gets the new grace period.
    let (_, again) = s
        .post(&format!("{path}/rotate"), json!({"grace_seconds": 60}))
        .await;
    let third = again["secret"].as_str().unwrap().to_owned();
    assert_eq!(s.code(json!({"key": first})).await, "unknown_key");
    assert_eq!(s.code(json!({"key": second})).await, "valid");
    assert_eq!(s.code(json!({"key": third})).await, "valid");

    // Ending the grace period early stops the old secret at once.
    let (status, ended) = s.post(&format!("{path}/end-grace"), json!({})).await;
    assert_eq!(
        (status, ended["rotation"]["in_grace_period"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    assert_eq!(s.code(json!({"key": second})).await, "key_expired");
    assert_eq!(s.code(json!({"key": third})).await, "valid");
    let (status, _) = s.post(&format!("{path}/end-grace"), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "no grace period left to end");
}

async fn publishable_keys_are_public_and_bound_to_origins(s: TestServer) {
    s.catalog(&["events:write", "customers:read"]).await;
    let keys = format!("/v1/workspaces/{}/keys", s.owner.workspace_id);
    let base = json!({"name": "web", "environment": "production", "kind": "publishable", "permissions": ["events:write"]});
    let (status, problem) = s.post(&keys, base.clone()).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("allowed_origins"))
    );
    let mut too_much = base.clone();
    too_much["permissions"] = json!(["events:write", "customers:read"]);
    too_much["allowed_origins"] = json!(["https://shop.example"]);
    let (status, problem) = s.post(&keys, too_much).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("permissions"))
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("customers:read"),
        "{problem}"
    );
    let (status, problem) = s
        .post(&keys, json!({"name": "srv", "environment": "production", "allowed_origins": ["https://a.example"]}))
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("allowed_origins"))
    );

    let mut ok = base.clone();
    ok["allowed_origins"] = json!(["https://Shop.example"]);
    let (key, public) = s.issue(ok).await;
    assert_eq!(key["allowed_origins"], json!(["https://shop.example"]));
    assert_eq!(
        key["publishable_key"],
        json!(public),
        "public by design, so shown again"
    );
    let from =
        |origin: &str| json!({"key": public, "origin": origin, "permissions": ["events:write"]});
    assert_eq!(s.code(from("https://shop.example")).await, "valid");
    let (verdict, _) = s.verify(from("https://evil.example")).await;
    assert_eq!(
        (verdict["code"].as_str(), verdict["status"].as_u64()),
        (Some("origin_not_allowed"), Some(403))
    );
    let path = format!("/v1/keys/{}", key["id"].as_str().unwrap());
    let (status, problem) = s
        .patch(&path, json!({"permissions": ["customers:read"]}))
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("permissions"))
    );
}

async fn integrations_guard_the_keys_they_use(s: TestServer) {
    let ws = s.owner.workspace_id.clone();
    let keys = format!("/v1/workspaces/{ws}/keys");
    let integrations = format!("/v1/workspaces/{ws}/integrations");
    let (_, web) = s
        .post(&keys, json!({"name": "web", "environment": "production", "kind": "publishable", "allowed_origins": ["https://shop.example"]}))
        .await;
    let (_, server) = s
        .post(
            &keys,
            json!({"name": "server", "environment": "production"}),
        )
        .await;
    let (_, spare) = s
        .post(&keys, json!({"name": "spare", "environment": "production"}))
        .await;
    let id = |k: &Value| k["key"]["id"].as_str().unwrap().to_owned();

    let (status, problem) = s
        .post(
            &integrations,
            json!({"name": "Snippet", "kind": "javascript_snippet", "key_id": id(&server)}),
        )
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("key_id")),
        "snippets are public"
    );
    let (status, snippet) = s
        .post(
            &integrations,
            json!({"name": "Snippet", "kind": "javascript_snippet", "key_id": id(&web)}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{snippet}");
    let code = snippet["snippet"].as_str().unwrap();
    assert!(
        code.contains(web["secret"].as_str().unwrap()) && code.contains(&id(&web)),
        "{code}"
    );
    assert!(!code.contains(server["secret"].as_str().unwrap()));
    let (status, backend) = s
        .post(
            &integrations,
            json!({"name": "Backend", "kind": "server", "key_id": id(&server)}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{backend}");

    // Removing a key in use is refused, naming who uses it…
    let server_path = format!("/v1/keys/{}", id(&server));
    let (status, problem) = delete(&s, &server_path, json!({"confirm_name": "server"})).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("key_in_use"))
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("Backend"),
        "{problem}"
    );
    let (status, problem) = s.post(&format!("{server_path}/revoke"), json!({})).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("key_in_use"))
    );

    // …until the integration moves to another key (seed 002) …
    let backend_path = format!("/v1/integrations/{}", backend["id"].as_str().unwrap());
    let (status, moved) = s.patch(&backend_path, json!({"key_id": id(&spare)})).await;
    assert_eq!(
        (status, moved["key_id"].as_str()),
        (StatusCode::OK, Some(id(&spare).as_str()))
    );
    assert_eq!(
        s.post(&format!("{server_path}/revoke"), json!({})).await.0,
        StatusCode::OK
    );
    // …or the caller forces it, leaving the integration without a key.
    let spare_path = format!("/v1/keys/{}", id(&spare));
    let (status, _) = delete(
        &s,
        &spare_path,
        json!({"confirm_name": "spare", "force": true}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, orphan) = s.get(&backend_path).await;
    assert_eq!(orphan["key_id"], Value::Null);

    let (_, list) = s.get(&integrations).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let other = s.new_tenant().await;
    let (status, _) = s.call(&other.token, Method::GET, &backend_path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s.call(&other.token, Method::GET, &integrations, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        s.call(&s.owner.token, Method::DELETE, &backend_path, None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
}
