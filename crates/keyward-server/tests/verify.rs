//! `POST /v1/verify` through the real HTTP API: the valid path and every
//! failure code of SPEC §3, reached on purpose, on both stores.

mod common;

use base64::Engine as _;
use common::{TestServer, eventually};
use rand_core::TryRngCore as _;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

on_both_stores!(
    a_new_key_verifies_with_its_details,
    every_failure_code_is_reachable,
    expiry_takes_effect_without_a_sweep,
    rate_limits_answer_429_with_headers,
    forwarded_headers_and_basic_pairs,
    allowlists_of_workspace_and_key,
    verify_needs_a_token_with_keys_verify,
    the_private_listener_verifies_its_account_without_a_token,
    last_use_is_recorded_in_batches,
);

async fn a_new_key_verifies_with_its_details(s: TestServer) {
    s.catalog(&["customers:read", "telemetry:write"]).await;
    let (key, secret) = s
        .issue(json!({
            "name": "Main Website Integration", "environment": "production",
            "permissions": ["customers:read", "telemetry:write"],
            "meta": {"plan": "pro"}, "customer_id": "cus_123"
        }))
        .await;
    assert!(secret.starts_with("kw_live_"), "{secret}");
    assert_eq!(key["hint"].as_str().unwrap()[..12], secret[..12]);
    assert_eq!(key["status"], "active");

    let (verdict, headers) = s
        .verify(
            json!({"key": secret, "environment": "production", "permissions": ["customers:read"],
                        "ip": "203.0.113.7", "customer_id": "cus_123"}),
        )
        .await;
    assert_eq!(verdict["valid"], true);
    assert_eq!(verdict["code"], "valid");
    assert_eq!(verdict["status"], 200);
    assert_eq!(verdict["key"]["id"], key["id"]);
    assert_eq!(verdict["key"]["name"], "Main Website Integration");
    assert_eq!(verdict["key"]["environment"], "production");
    assert_eq!(verdict["key"]["customer_id"], "cus_123");
    assert_eq!(verdict["key"]["meta"], json!({"plan": "pro"}));
    assert_eq!(
        verdict["key"]["permissions"],
        json!(["customers:read", "telemetry:write"])
    );
    assert_eq!(verdict["rate_limit"], json!(null));
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers.get("ratelimit").is_none());
}

async fn every_failure_code_is_reachable(s: TestServer) {
    s.catalog(&["customers:read", "licenses:manage"]).await;
    let (key, secret) = s
        .issue(json!({"name": "scoped", "environment": "production",
                      "permissions": ["customers:read"], "customer_id": "cus_1"}))
        .await;
    let ok = json!({"key": secret, "environment": "production", "permissions": ["customers:read"], "customer_id": "cus_1"});
    assert_eq!(s.code(ok.clone()).await, "valid");

    let mut tampered = secret.clone();
    tampered.replace_range(10..11, if &secret[10..11] == "A" { "B" } else { "A" });
    let expectations = [
        (json!({"key": "not-a-key"}), "malformed_key", 401),
        (json!({"key": tampered}), "malformed_key", 401),
        (
            json!({"key": format!("{}_{}", "kw_live", "x".repeat(38))}),
            "malformed_key",
            401,
        ),
        (
            json!({"key": secret, "environment": "staging"}),
            "wrong_environment",
            401,
        ),
        (
            json!({"key": secret, "permissions": ["licenses:manage"]}),
            "insufficient_permissions",
            403,
        ),
        (
            json!({"key": secret, "permissions": ["customers:read", "never:granted"]}),
            "insufficient_permissions",
            403,
        ),
        (
            json!({"key": secret, "customer_id": "cus_2"}),
            "customer_mismatch",
            403,
        ),
    ];
    for (request, code, status) in expectations {
        let (verdict, _) = s.verify(request.clone()).await;
        assert_eq!(
            (
                verdict["code"].as_str().unwrap(),
                verdict["status"].as_u64().unwrap()
            ),
            (code, status),
            "{request}"
        );
        assert_eq!(verdict["valid"], false);
    }

    // Keys that fail the format, and a well-formed key nobody issued.
    let (other, other_secret) = s
        .issue(json!({"name": "to revoke", "environment": "production"}))
        .await;
    let retagged = other_secret.replace("kw_live_", "kw_dev_");
    let (verdict, _) = s.verify(json!({"key": retagged})).await;
    assert_eq!(
        verdict["code"], "malformed_key",
        "changing the tag breaks the checksum"
    );
    let never_issued = keyward_core::KeyFormat::default().generate(
        &keyward_core::EnvTag::parse("live").unwrap(),
        &mut rand_core::OsRng.unwrap_err(),
    );
    let (verdict, _) = s.verify(json!({"key": never_issued.expose()})).await;
    assert_eq!(
        (verdict["code"].as_str(), verdict["status"].as_u64()),
        (Some("unknown_key"), Some(401))
    );
    let issued_elsewhere = s.new_tenant().await;
    let (_, foreign) = s
        .issue_as(
            &issued_elsewhere,
            json!({"name": "theirs", "environment": "production"}),
        )
        .await;
    let (verdict, _) = s.verify(json!({"key": foreign})).await;
    assert_eq!(
        verdict["code"], "unknown_key",
        "another account's key is unknown here"
    );
    assert_eq!(verdict["key"], json!(null), "and nothing about it leaks");

    let key_path = format!("/v1/keys/{}", key["id"].as_str().unwrap());
    assert_eq!(
        s.post(&format!("{key_path}/disable"), json!({})).await.0,
        StatusCode::OK
    );
    let (verdict, _) = s.verify(ok.clone()).await;
    assert_eq!(
        (
            verdict["code"].as_str().unwrap(),
            verdict["status"].as_u64().unwrap()
        ),
        ("key_inactive", 401)
    );
    assert_eq!(
        s.post(&format!("{key_path}/enable"), json!({})).await.0,
        StatusCode::OK
    );
    assert_eq!(s.code(ok.clone()).await, "valid", "disabling is reversible");

    let other_path = format!("/v1/keys/{}", other["id"].as_str().unwrap());
    let (status, revoked) = s.post(&format!("{other_path}/revoke"), json!({})).await;
    assert_eq!(
        (status, revoked["status"].as_str()),
        (StatusCode::OK, Some("revoked"))
    );
    assert_eq!(s.code(json!({"key": other_secret})).await, "key_revoked");
    let (status, problem) = s.post(&format!("{other_path}/enable"), json!({})).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "revocation is permanent: {problem}"
    );
    assert_eq!(s.code(json!({"key": other_secret})).await, "key_revoked");
}

async fn expiry_takes_effect_without_a_sweep(s: TestServer) {
    let soon = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1500);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (key, secret) = s
        .issue(json!({"name": "short-lived", "environment": "production", "expires_at": soon}))
        .await;
    assert!(key["expires_at"].is_string());
    // The key is valid until its expiry passes; then `key_expired`, at once.
    let code = eventually(Duration::from_secs(10), || async {
        let code = s.code(json!({"key": secret})).await;
        (code != "valid").then_some(code)
    })
    .await;
    assert_eq!(code, "key_expired");
    let (_, shown) = s
        .get(&format!("/v1/keys/{}", key["id"].as_str().unwrap()))
        .await;
    assert_eq!(shown["status"], "expired");
}

async fn rate_limits_answer_429_with_headers(s: TestServer) {
    let (_, secret) = s
        .issue(json!({"name": "limited", "environment": "production", "rate_limit": {"limit": 2, "window_seconds": 60}}))
        .await;
    let request = json!({"key": secret});
    let (first, headers) = s.verify(request.clone()).await;
    assert_eq!(first["code"], "valid");
    assert_eq!(
        first["rate_limit"],
        json!({"limit": 2, "remaining": 1, "reset_seconds": 30})
    );
    assert_eq!(headers["ratelimit-policy"], "\"key\";q=2;w=60");
    assert_eq!(headers["ratelimit"], "\"key\";r=1;t=30");
    assert_eq!(s.code(request.clone()).await, "valid");
    let (third, headers) = s.verify(request.clone()).await;
    assert_eq!(
        (third["code"].as_str(), third["status"].as_u64()),
        (Some("rate_limited"), Some(429))
    );
    assert_eq!(third["rate_limit"]["remaining"], 0);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");

    // Only requests that pass every other check count against the limit.
    let (_, fresh) = s
        .issue(json!({"name": "limited 2", "environment": "production", "rate_limit": {"limit": 1, "window_seconds": 60}}))
        .await;
    for _ in 0..3 {
        assert_eq!(
            s.code(json!({"key": fresh, "environment": "staging"}))
                .await,
            "wrong_environment"
        );
    }
    assert_eq!(s.code(json!({"key": fresh})).await, "valid");
    assert_eq!(s.code(json!({"key": fresh})).await, "rate_limited");
}

async fn forwarded_headers_and_basic_pairs(s: TestServer) {
    let (key, secret) = s
        .issue(json!({"name": "pair", "environment": "production", "kind": "ingest"}))
        .await;
    let id = key["id"].as_str().unwrap();
    let basic = |site: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{site}:{secret}"))
        )
    };
    assert_eq!(
        s.code(json!({"authorization": format!("Bearer {secret}")}))
            .await,
        "valid"
    );
    assert_eq!(s.code(json!({"x_api_key": secret})).await, "valid");
    assert_eq!(s.code(json!({"authorization": basic(id)})).await, "valid");
    assert_eq!(
        s.code(json!({"authorization": basic("key_someoneelse")}))
            .await,
        "unknown_key"
    );
    assert_eq!(
        s.code(json!({"authorization": "Digest abc"})).await,
        "malformed_key"
    );
    let (status, problem) = s
        .post("/v1/verify", json!({"key": secret, "x_api_key": secret}))
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("key"))
    );
    let (status, problem) = s
        .post("/v1/verify", json!({"environment": "production"}))
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("key"))
    );
}

async fn allowlists_of_workspace_and_key(s: TestServer) {
    let (key, secret) = s
        .issue(json!({"name": "office only", "environment": "production"}))
        .await;
    let from = |ip: &str| json!({"key": secret, "ip": ip});
    assert_eq!(
        s.code(from("198.51.100.4")).await,
        "valid",
        "no entries: unrestricted"
    );

    let (status, entry) = s
        .post("/v1/ip-allowlist", json!({"address": "203.0.113.0/24", "workspace_ids": [s.owner.workspace_id], "description": "office"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{entry}");
    assert_eq!(entry["address"], "203.0.113.0/24");
    assert_eq!(s.code(from("203.0.113.9")).await, "valid");
    let (verdict, _) = s.verify(from("198.51.100.4")).await;
    assert_eq!(
        (verdict["code"].as_str(), verdict["status"].as_u64()),
        (Some("ip_not_allowed"), Some(403))
    );
    assert_eq!(
        s.code(json!({"key": secret})).await,
        "ip_not_allowed",
        "an unknown address never passes a list"
    );

    // Key-level list on top of the workspace's.
    let key_path = format!("/v1/keys/{}", key["id"].as_str().unwrap());
    let (status, _) = s
        .patch(&key_path, json!({"allowed_ips": ["203.0.113.9"]}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.code(from("203.0.113.9")).await, "valid");
    assert_eq!(s.code(from("203.0.113.10")).await, "ip_not_allowed");

    // Removing the workspace entry leaves the key's own list.
    let entry_path = format!("/v1/ip-allowlist/{}", entry["id"].as_str().unwrap());
    assert_eq!(
        s.call(&s.owner.token, Method::DELETE, &entry_path, None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(s.code(from("203.0.113.10")).await, "ip_not_allowed");
    assert_eq!(s.code(from("203.0.113.9")).await, "valid");

    // Another workspace's entries do not restrict this one.
    let (_, other) = s.post("/v1/workspaces", json!({"name": "Other"})).await;
    s.post(
        "/v1/ip-allowlist",
        json!({"address": "10.0.0.0/8", "workspace_ids": [other["id"]]}),
    )
    .await;
    assert_eq!(s.code(from("203.0.113.9")).await, "valid");
}

async fn verify_needs_a_token_with_keys_verify(s: TestServer) {
    let (_, secret) = s
        .issue(json!({"name": "k", "environment": "production"}))
        .await;
    let (status, problem) = s
        .call("", Method::POST, "/v1/verify", Some(json!({"key": secret})))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let (status, _) = s
        .call(
            &secret,
            Method::POST,
            "/v1/verify",
            Some(json!({"key": secret})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an API key is not a management token"
    );

    let (status, created) = s
        .post(
            "/v1/management-tokens",
            json!({"name": "admin only", "permissions": ["manage_api_credentials"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let admin_only = created["secret"].as_str().unwrap();
    let (status, problem) = s
        .call(
            admin_only,
            Method::POST,
            "/v1/verify",
            Some(json!({"key": secret})),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );

    let (_, created) = s
        .post(
            "/v1/management-tokens",
            json!({"name": "verifier", "permissions": ["keys:verify"]}),
        )
        .await;
    let verifier = created["secret"].as_str().unwrap();
    let (status, verdict) = s
        .call(
            verifier,
            Method::POST,
            "/v1/verify",
            Some(json!({"key": secret})),
        )
        .await;
    assert_eq!(
        (status, verdict["code"].as_str()),
        (StatusCode::OK, Some("valid"))
    );
    let (status, _) = s.call(verifier, Method::GET, "/v1/workspaces", None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a verify-only token cannot administer"
    );
}

async fn the_private_listener_verifies_its_account_without_a_token(s: TestServer) {
    let (key, secret) = s
        .issue(json!({"name": "k", "environment": "production"}))
        .await;
    let (status, verdict) = s
        .verify_privately(json!({"key": secret, "environment": "production"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{verdict}");
    assert_eq!(verdict["code"], "valid");
    assert_eq!(verdict["key"]["id"], key["id"]);

    let other = s.new_tenant().await;
    let (_, theirs) = s
        .issue_as(
            &other,
            json!({"name": "theirs", "environment": "production"}),
        )
        .await;
    let (status, verdict) = s.verify_privately(json!({"key": theirs})).await;
    assert_eq!(
        (status, verdict["code"].as_str()),
        (StatusCode::OK, Some("unknown_key")),
        "another account's key is unknown here: {verdict}"
    );
    assert_eq!(verdict["key"], json!(null));

    let (status, problem) = s
        .verify_privately(json!({"key": secret, "ip": "nowhere"}))
        .await;
    assert_eq!(
        (status, problem["code"].as_str(), problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_field"), Some("ip")),
        "{problem}"
    );

    // Nothing but verification is reachable through it, token or not.
    let client = reqwest::Client::new();
    for path in ["/v1/workspaces", "/metrics", "/v1/openapi.json"] {
        let response = client
            .get(format!("{}{path}", s.private_base))
            .bearer_auth(&s.owner.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }

    // Its verifications are logged like any other.
    let logs = format!("/v1/keys/{}/logs", key["id"].as_str().unwrap());
    let logged = eventually(Duration::from_secs(10), || async {
        let (_, page) = s.get(&logs).await;
        (!page["data"].as_array().unwrap().is_empty()).then_some(page)
    })
    .await;
    assert_eq!(logged["data"][0]["code"], "valid", "{logged}");
}

async fn last_use_is_recorded_in_batches(s: TestServer) {
    let (key, secret) = s
        .issue(json!({"name": "used", "environment": "production"}))
        .await;
    assert_eq!(key["last_used_at"], json!(null));
    assert_eq!(
        s.code(json!({"key": secret, "ip": "::ffff:203.0.113.7"}))
            .await,
        "valid"
    );
    let path = format!("/v1/keys/{}", key["id"].as_str().unwrap());
    let shown = eventually(Duration::from_secs(10), || async {
        let (_, shown) = s.get(&path).await;
        shown["last_used_at"].is_string().then_some(shown)
    })
    .await;
    assert_eq!(shown["last_used_ip"], "203.0.113.7");
}
