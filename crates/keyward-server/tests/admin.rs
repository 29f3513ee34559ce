//! The admin API through real HTTP on both stores: resources, authorization,
//! tenant isolation, bad input, pagination, idempotency and the OpenAPI
//! document.

mod common;

use common::{TestServer, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

on_both_stores!(
    workspaces_and_environments,
    keys_are_listed_filtered_and_updated,
    the_permission_catalog_guards_keys,
    members_without_the_permission_are_refused,
    one_account_cannot_reach_another,
    bad_input_is_a_4xx_naming_the_field,
    idempotent_creates_replay_without_the_secret,
    management_tokens_can_be_revoked_and_expire,
    every_documented_route_exists,
    every_answer_is_documented,
    health_and_readiness,
);

async fn workspaces_and_environments(s: TestServer) {
    let (status, ws) = s.post("/v1/workspaces", json!({"name": "Shop"})).await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    let tags: Vec<_> = ws["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags.len(), 3);
    for tag in ["live", "stg", "dev"] {
        assert!(tags.contains(&tag), "{tags:?}");
    }
    let path = format!("/v1/workspaces/{}", ws["id"].as_str().unwrap());
    let (status, renamed) = s.patch(&path, json!({"name": "Shop EU"})).await;
    assert_eq!(
        (status, renamed["name"].as_str()),
        (StatusCode::OK, Some("Shop EU"))
    );

    let (status, env) = s
        .post(
            &format!("{path}/environments"),
            json!({"name": "eu-production", "tag": "eu"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{env}");
    let (status, problem) = s
        .post(
            &format!("{path}/environments"),
            json!({"name": "other", "tag": "eu"}),
        )
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::CONFLICT, Some("tag"))
    );
    let (status, problem) = s
        .post(
            &format!("{path}/environments"),
            json!({"name": "mgmt", "tag": "mgmt"}),
        )
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("tag")),
        "mgmt is reserved"
    );
    let (_, list) = s.get(&format!("{path}/environments")).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 4);

    // A key in the new environment carries its tag.
    let (status, created) = s
        .post(
            &format!("{path}/keys"),
            json!({"name": "eu", "environment": "eu-production"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["secret"].as_str().unwrap().starts_with("kw_eu_"));

    let (status, custom) = s
        .post(
            "/v1/workspaces",
            json!({"name": "Custom", "environments": [{"name": "production", "tag": "live"}]}),
        )
        .await;
    assert_eq!(
        (status, custom["environments"].as_array().unwrap().len()),
        (StatusCode::CREATED, 1)
    );

    let (_, all) = s.get("/v1/workspaces").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 3);
    assert_eq!(
        s.call(&s.owner.token, Method::DELETE, &path, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(s.get(&path).await.0, StatusCode::NOT_FOUND);
    let (_, all) = s.get("/v1/workspaces").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
}

async fn keys_are_listed_filtered_and_updated(s: TestServer) {
    s.catalog(&["customers:read", "telemetry:write"]).await;
    let mut ids = Vec::new();
    for (i, env) in [
        "production",
        "staging",
        "production",
        "development",
        "production",
    ]
    .iter()
    .enumerate()
    {
        let (key, _) = s
            .issue(json!({"name": format!("key {i}"), "environment": env}))
            .await;
        ids.push(key["id"].as_str().unwrap().to_owned());
    }
    let base = format!("/v1/workspaces/{}/keys", s.owner.workspace_id);
    // Pages of two, in creation order, until next_cursor is null.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{base}?limit=2&cursor={c}"),
            None => format!("{base}?limit=2"),
        };
        let (status, page) = s.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let expected: Vec<_> = std::iter::once(s.owner.primary_key_id.clone())
        .chain(ids.clone())
        .collect();
    assert_eq!(
        seen, expected,
        "the workspace's primary key first, then ours in order"
    );

    let (_, production) = s.get(&format!("{base}?environment=production")).await;
    assert_eq!(
        production["data"].as_array().unwrap().len(),
        4,
        "three and the primary key"
    );
    s.post(&format!("/v1/keys/{}/disable", ids[0]), json!({}))
        .await;
    let (_, ingest) = s.get(&format!("{base}?kind=ingest")).await;
    let ingest = ingest["data"].as_array().unwrap();
    assert_eq!(ingest.len(), 1, "the primary key");
    assert_eq!(ingest[0]["kind"], "ingest");
    let (_, inactive) = s.get(&format!("{base}?status=inactive")).await;
    assert_eq!(
        inactive["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].clone())
            .collect::<Vec<_>>(),
        vec![json!(ids[0])]
    );

    let path = format!("/v1/keys/{}", ids[1]);
    let (status, updated) = s
        .patch(
            &path,
            json!({
                "name": "renamed", "permissions": ["telemetry:write", "customers:read"],
                "rate_limit": {"limit": 10, "window_seconds": 1}, "customer_id": "cus_9",
                "allowed_ips": ["10.0.0.0/8"], "meta": {"team": "growth"},
                "expires_at": "2999-01-01T00:00:00Z"
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "renamed");
    assert_eq!(
        updated["permissions"],
        json!(["customers:read", "telemetry:write"])
    );
    assert_eq!(
        updated["rate_limit"],
        json!({"limit": 10, "window_seconds": 1})
    );
    assert_eq!(updated["allowed_ips"], json!(["10.0.0.0/8"]));
    assert_eq!(updated["expires_at"], "2999-01-01T00:00:00Z");
    let (status, cleared) = s
        .patch(
            &path,
            json!({"rate_limit": null, "customer_id": null, "expires_at": null, "allowed_ips": []}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            cleared["rate_limit"].clone(),
            cleared["customer_id"].clone(),
            cleared["expires_at"].clone()
        ),
        (Value::Null, Value::Null, Value::Null)
    );
    assert_eq!(cleared["name"], "renamed", "fields left out are unchanged");
    assert_eq!(cleared["meta"], json!({"team": "growth"}));

    let (status, problem) = s.patch(&path, json!({"name": "key 0"})).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::CONFLICT, Some("name")),
        "names are unique per workspace"
    );
    let (status, got) = s.get(&path).await;
    assert_eq!(
        (status, got["name"].as_str()),
        (StatusCode::OK, Some("renamed"))
    );
    assert!(
        got.get("secret").is_none() && !got.to_string().contains("hash"),
        "{got}"
    );
}

async fn the_permission_catalog_guards_keys(s: TestServer) {
    s.catalog(&["licenses:manage"]).await;
    let (status, problem) = s
        .post("/v1/permissions", json!({"name": "licenses:manage"}))
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::CONFLICT, Some("name"))
    );
    let path = format!("/v1/workspaces/{}/keys", s.owner.workspace_id);
    let (status, problem) = s
        .post(
            &path,
            json!({"name": "k", "environment": "production", "permissions": ["customers:read"]}),
        )
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("permissions")),
        "{problem}"
    );
    s.issue(json!({"name": "k", "environment": "production", "permissions": ["licenses:manage"]}))
        .await;
    let (status, problem) = s
        .call(
            &s.owner.token,
            Method::DELETE,
            "/v1/permissions/licenses:manage",
            None,
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("in_use"))
    );
    s.catalog(&["unused:thing"]).await;
    assert_eq!(
        s.call(
            &s.owner.token,
            Method::DELETE,
            "/v1/permissions/unused:thing",
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    let (_, list) = s.get("/v1/permissions").await;
    assert_eq!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].clone())
            .collect::<Vec<_>>(),
        vec![json!("licenses:manage")]
    );
}

async fn members_without_the_permission_are_refused(s: TestServer) {
    let (status, member) = s
        .post(
            "/v1/members",
            json!({"email": "dev@example.com", "role": "member", "permissions": ["keys:verify"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    assert_eq!(member["effective_permissions"], json!(["keys:verify"]));
    let member_id = member["id"].as_str().unwrap();

    // A member's token cannot hold what the member does not.
    let (status, problem) = s
        .post("/v1/management-tokens", json!({"name": "ci", "member_id": member_id, "permissions": ["manage_api_credentials"]}))
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("permissions"))
    );
    let (_, created) = s
        .post(
            "/v1/management-tokens",
            json!({"name": "ci", "member_id": member_id, "permissions": ["keys:verify"]}),
        )
        .await;
    let token = created["secret"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, "/v1/workspaces".to_owned()),
        (
            Method::GET,
            format!("/v1/workspaces/{}/keys", s.owner.workspace_id),
        ),
        (Method::GET, "/v1/ip-allowlist".to_owned()),
        (Method::GET, "/v1/members".to_owned()),
    ] {
        let (status, problem) = s.call(token, method, &path, None).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{path}"
        );
    }
    let (status, _) = s
        .call(
            token,
            Method::POST,
            &format!("/v1/workspaces/{}/keys", s.owner.workspace_id),
            Some(json!({"name": "x", "environment": "production"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // An admin holds everything; only owners add owners.
    let (_, admin) = s
        .post(
            "/v1/members",
            json!({"email": "admin@example.com", "role": "admin"}),
        )
        .await;
    let (_, created) = s
        .post("/v1/management-tokens", json!({"name": "admin", "member_id": admin["id"], "permissions": ["manage_api_credentials", "manage_members"]}))
        .await;
    let admin_token = created["secret"].as_str().unwrap();
    assert_eq!(
        s.call(admin_token, Method::GET, "/v1/workspaces", None)
            .await
            .0,
        StatusCode::OK
    );
    let (status, _) = s
        .call(
            admin_token,
            Method::POST,
            "/v1/members",
            Some(json!({"email": "boss@example.com", "role": "owner"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, problem) = s
        .post(
            "/v1/members",
            json!({"email": "DEV@example.com", "role": "member"}),
        )
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::CONFLICT, Some("email"))
    );
}

async fn one_account_cannot_reach_another(s: TestServer) {
    s.catalog(&["customers:read"]).await;
    let (key, _) = s
        .issue(json!({"name": "mine", "environment": "production"}))
        .await;
    let (_, entry) = s
        .post(
            "/v1/ip-allowlist",
            json!({"address": "10.0.0.1", "workspace_ids": [s.owner.workspace_id]}),
        )
        .await;
    let (_, token) = s
        .post(
            "/v1/management-tokens",
            json!({"name": "t", "permissions": ["keys:verify"]}),
        )
        .await;
    let (_, members) = s.get("/v1/members").await;
    let other = s.new_tenant().await;

    let ws = format!("/v1/workspaces/{}", s.owner.workspace_id);
    let key_path = format!("/v1/keys/{}", key["id"].as_str().unwrap());
    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, ws.clone(), None),
        (Method::PATCH, ws.clone(), Some(json!({"name": "stolen"}))),
        (Method::DELETE, ws.clone(), None),
        (Method::GET, format!("{ws}/environments"), None),
        (
            Method::POST,
            format!("{ws}/environments"),
            Some(json!({"name": "x", "tag": "x"})),
        ),
        (Method::GET, format!("{ws}/keys"), None),
        (
            Method::POST,
            format!("{ws}/keys"),
            Some(json!({"name": "x", "environment": "production"})),
        ),
        (Method::GET, key_path.clone(), None),
        (
            Method::PATCH,
            key_path.clone(),
            Some(json!({"name": "stolen"})),
        ),
        (Method::POST, format!("{key_path}/disable"), None),
        (Method::POST, format!("{key_path}/revoke"), None),
        (
            Method::DELETE,
            format!("/v1/ip-allowlist/{}", entry["id"].as_str().unwrap()),
            None,
        ),
        (
            Method::DELETE,
            format!(
                "/v1/management-tokens/{}",
                token["token"]["id"].as_str().unwrap()
            ),
            None,
        ),
        (
            Method::DELETE,
            "/v1/permissions/customers:read".into(),
            None,
        ),
        (
            Method::POST,
            "/v1/ip-allowlist".into(),
            Some(json!({"address": "10.0.0.2", "workspace_ids": [s.owner.workspace_id]})),
        ),
        (
            Method::POST,
            "/v1/management-tokens".into(),
            Some(json!({"name": "x", "permissions": [], "member_id": members["data"][0]["id"]})),
        ),
    ];
    for (method, path, body) in attempts {
        let (status, problem) = s.call(&other.token, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {problem}");
    }
    // Nothing changed, and the other account's lists show none of it.
    let (_, still) = s.get(&key_path).await;
    assert_eq!(
        (still["name"].as_str(), still["status"].as_str()),
        (Some("mine"), Some("active"))
    );
    let (_, theirs) = s
        .call(&other.token, Method::GET, "/v1/workspaces", None)
        .await;
    assert_eq!(theirs["data"].as_array().unwrap().len(), 1);
    assert_ne!(theirs["data"][0]["id"], json!(s.owner.workspace_id));
    let (_, allowlist) = s
        .call(&other.token, Method::GET, "/v1/ip-allowlist", None)
        .await;
    assert_eq!(allowlist["data"], json!([]));
    let (_, catalog) = s
        .call(&other.token, Method::GET, "/v1/permissions", None)
        .await;
    assert_eq!(catalog["data"], json!([]));
    let (_, tokens) = s
        .call(&other.token, Method::GET, "/v1/management-tokens", None)
        .await;
    assert_eq!(
        tokens["data"].as_array().unwrap().len(),
        1,
        "only their own initial token"
    );
}

async fn bad_input_is_a_4xx_naming_the_field(s: TestServer) {
    let keys = format!("/v1/workspaces/{}/keys", s.owner.workspace_id);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"environment": "production"}), "name"),
        (json!({"name": 42, "environment": "production"}), "name"),
        (json!({"name": "", "environment": "production"}), "name"),
        (json!({"name": "a", "environment": "Prod!"}), "environment"),
        (
            json!({"name": "a", "environment": "nowhere"}),
            "environment",
        ),
        (
            json!({"name": "a", "environment": "production", "colour": "red"}),
            "colour",
        ),
        (
            json!({"name": "a", "environment": "production", "kind": "root"}),
            "kind",
        ),
        (
            json!({"name": "a", "environment": "production", "permissions": ["Not A Permission"]}),
            "permissions[0]",
        ),
        (
            json!({"name": "a", "environment": "production", "permissions": "customers:read"}),
            "permissions",
        ),
        (
            json!({"name": "a", "environment": "production", "allowed_ips": ["10.0.0.0/33"]}),
            "allowed_ips[0]",
        ),
        (
            json!({"name": "a", "environment": "production", "allowed_ips": ["10.0.0.0/8", "example.com"]}),
            "allowed_ips[1]",
        ),
        (
            json!({"name": "a", "environment": "production", "rate_limit": {"limit": 0, "window_seconds": 60}}),
            "rate_limit.limit",
        ),
        (
            json!({"name": "a", "environment": "production", "rate_limit": {"limit": -1, "window_seconds": 60}}),
            "rate_limit.limit",
        ),
        (
            json!({"name": "a", "environment": "production", "rate_limit": {"limit": 5}}),
            "rate_limit.window_seconds",
        ),
        (
            json!({"name": "a", "environment": "production", "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (
            json!({"name": "a", "environment": "production", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"name": "a", "environment": "production", "customer_id": "has space"}),
            "customer_id",
        ),
        (
            json!({"name": "a", "environment": "production", "meta": [1, 2]}),
            "meta",
        ),
        (
            json!({"name": "a", "environment": "production", "meta": {"big": "x".repeat(5000)}}),
            "meta",
        ),
    ];
    for (body, field) in cases {
        let (status, problem) = s.post(&keys, body.clone()).await;
        assert!(status.is_client_error(), "{body} → {status}");
        assert_eq!(problem["field"].as_str(), Some(field), "{body} → {problem}");
        assert!(
            problem["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:keyward:problem:"),
            "{problem}"
        );
        assert_eq!(problem["status"].as_u64(), Some(u64::from(status.as_u16())));
    }
    let (_, list) = s.get(&keys).await;
    let names: Vec<_> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("Primary")], "no half-written key");

    let other_cases: Vec<(&str, Value, &str)> = vec![
        (
            "/v1/ip-allowlist",
            json!({"address": "10.0.0.1/8", "workspace_ids": [s.owner.workspace_id]}),
            "address",
        ),
        (
            "/v1/ip-allowlist",
            json!({"address": "10.0.0.1", "workspace_ids": []}),
            "workspace_ids",
        ),
        (
            "/v1/ip-allowlist",
            json!({"address": "10.0.0.1", "workspace_ids": ["ws_nope"]}),
            "workspace_ids",
        ),
        (
            "/v1/workspaces",
            json!({"name": "x", "environments": [{"name": "a", "tag": "A"}]}),
            "environments[0].tag",
        ),
        ("/v1/permissions", json!({"name": "nocolon"}), "name"),
        (
            "/v1/members",
            json!({"email": "nope", "role": "member"}),
            "email",
        ),
        (
            "/v1/members",
            json!({"email": "a@example.com", "role": "god"}),
            "role",
        ),
        (
            "/v1/management-tokens",
            json!({"name": "x", "permissions": ["everything"]}),
            "permissions[0]",
        ),
        (
            "/v1/verify",
            json!({"key": "kw_live_x", "ip": "300.1.1.1"}),
            "ip",
        ),
        (
            "/v1/verify",
            json!({"key": "kw_live_x", "permissions": ["BAD"]}),
            "permissions[0]",
        ),
        (
            "/v1/verify",
            json!({"key": "kw_live_x", "environment": "Prod"}),
            "environment",
        ),
    ];
    for (path, body, field) in other_cases {
        let (status, problem) = s.post(path, body.clone()).await;
        assert!(status.is_client_error(), "{path} {body} → {status}");
        assert_eq!(
            problem["field"].as_str(),
            Some(field),
            "{path} {body} → {problem}"
        );
    }

    // Transport-level problems are problems too.
    let too_big = json!({"name": "x".repeat(70 * 1024), "environment": "production"});
    let (status, problem) = s.post(&keys, too_big).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large"))
    );
    let response = s
        .send(
            &s.owner.token,
            Method::POST,
            &keys,
            None,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let response = s
        .send(
            &s.owner.token,
            Method::POST,
            &keys,
            None,
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, problem) = s.get(&format!("{keys}?limit=1000")).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("limit"))
    );
    let (status, problem) = s.get(&format!("{keys}?cursor=%%%")).await;
    assert!(status.is_client_error(), "{problem}");
    let (status, problem) = s.get(&format!("{keys}?status=sleeping")).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("status"))
    );
    let (status, problem) = s.get(&format!("{keys}?kind=master")).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("kind"))
    );
    let (status, problem) = s.get("/v1/nothing-here").await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("route_not_found"))
    );
    let (status, problem) = s
        .call(&s.owner.token, Method::PUT, "/v1/workspaces", None)
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
}

async fn idempotent_creates_replay_without_the_secret(s: TestServer) {
    let path = format!("/v1/workspaces/{}/keys", s.owner.workspace_id);
    let body = json!({"name": "once", "environment": "production"});
    let headers = [("idempotency-key", "req-123")];
    let first = s
        .send(
            &s.owner.token,
            Method::POST,
            &path,
            Some(body.clone()),
            &headers,
        )
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    assert!(first["secret"].is_string());

    let replay = s
        .send(
            &s.owner.token,
            Method::POST,
            &path,
            Some(body.clone()),
            &headers,
        )
        .await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["key"]["id"], first["key"]["id"]);
    assert_eq!(
        replay["secret"],
        Value::Null,
        "secrets are never stored, so never replayed"
    );
    let (_, list) = s.get(&path).await;
    let named_once = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"] == "once")
        .count();
    assert_eq!(named_once, 1, "created once");

    let other = s
        .send(
            &s.owner.token,
            Method::POST,
            &path,
            Some(json!({"name": "twice", "environment": "production"})),
            &headers,
        )
        .await;
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // A failed request leaves the key free for a corrected retry.
    let retry = [("idempotency-key", "req-456")];
    let bad = s
        .send(
            &s.owner.token,
            Method::POST,
            &path,
            Some(json!({"name": "r", "environment": "nowhere"})),
            &retry,
        )
        .await;
    assert_eq!(bad.status(), StatusCode::NOT_FOUND);
    let fixed = s
        .send(
            &s.owner.token,
            Method::POST,
            &path,
            Some(json!({"name": "r", "environment": "nowhere"})),
            &retry,
        )
        .await;
    assert_eq!(
        fixed.status(),
        StatusCode::NOT_FOUND,
        "re-run, not replayed"
    );
    assert!(fixed.headers().get("idempotent-replayed").is_none());

    // Keys are per account: another tenant's identical key is independent.
    let other = s.new_tenant().await;
    let theirs = s
        .send(
            &other.token,
            Method::POST,
            &format!("/v1/workspaces/{}/keys", other.workspace_id),
            Some(body),
            &headers,
        )
        .await;
    assert_eq!(theirs.status(), StatusCode::CREATED);
    assert!(theirs.headers().get("idempotent-replayed").is_none());
}

async fn management_tokens_can_be_revoked_and_expire(s: TestServer) {
    let (status, created) = s
        .post(
            "/v1/management-tokens",
            json!({"name": "ci", "permissions": ["manage_api_credentials"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("kw_mgmt_"));
    let id = created["token"]["id"].as_str().unwrap();
    assert_eq!(created["token"]["last_used_at"], Value::Null);
    assert_eq!(
        s.call(secret, Method::GET, "/v1/workspaces", None).await.0,
        StatusCode::OK
    );
    // Its use is recorded with the next batch of usage writes.
    let list = eventually(Duration::from_secs(10), || async {
        let (_, list) = s.get("/v1/management-tokens").await;
        let listed = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|token| token["id"] == id)
            .cloned()
            .unwrap();
        listed["last_used_at"].is_string().then_some(list)
    })
    .await;
    assert!(
        !list.to_string().contains(secret),
        "tokens are listed by hint only"
    );
    let path = format!("/v1/management-tokens/{id}");
    assert_eq!(
        s.call(&s.owner.token, Method::DELETE, &path, None).await.0,
        StatusCode::NO_CONTENT
    );
    let response = s
        .send(secret, Method::GET, "/v1/workspaces", None, &[])
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );

    let (status, problem) = s
        .post(
            "/v1/management-tokens",
            json!({"name": "old", "permissions": [], "expires_at": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("expires_at"))
    );
    let (status, _) = s
        .call("kw_mgmt_garbage", Method::GET, "/v1/workspaces", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn every_documented_route_exists(s: TestServer) {
    let response = reqwest::get(format!("{}/v1/openapi.json", s.base))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["VerdictBody"]["properties"]["key"]
            .to_string()
            .contains("#/components/schemas/VerdictKey"),
        "the verdict's key is documented: {}",
        schemas["VerdictBody"]
    );
    assert!(schemas["VerdictKey"]["properties"]["permissions"].is_object());
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/v1/workspaces", &["get", "post"][..]),
        ("/v1/workspaces/{id}", &["get", "patch", "delete"]),
        ("/v1/workspaces/{id}/environments", &["get", "post"]),
        ("/v1/workspaces/{id}/keys", &["get", "post"]),
        ("/v1/keys/{id}", &["get", "patch", "delete"]),
        ("/v1/keys/{id}/disable", &["post"]),
        ("/v1/keys/{id}/enable", &["post"]),
        ("/v1/keys/{id}/revoke", &["post"]),
        ("/v1/keys/{id}/rotate", &["post"]),
        ("/v1/keys/{id}/end-grace", &["post"]),
        ("/v1/workspaces/{id}/integrations", &["get", "post"]),
        ("/v1/integrations/{id}", &["get", "patch", "delete"]),
        ("/v1/permissions", &["get", "post"]),
        ("/v1/permissions/{name}", &["delete"]),
        ("/v1/ip-allowlist", &["get", "post"]),
        ("/v1/ip-allowlist/{id}", &["delete"]),
        ("/v1/members", &["get", "post"]),
        ("/v1/members/{id}", &["patch", "delete"]),
        ("/v1/audit-events", &["get"]),
        ("/v1/management-tokens", &["get", "post"]),
        ("/v1/management-tokens/{id}", &["delete"]),
        ("/v1/verify", &["post"]),
        ("/v1/logs", &["get"]),
        ("/v1/keys/{id}/logs", &["get"]),
    ];
    for (path, methods) in expected {
        let documented = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from the document"));
        for method in methods {
            assert!(
                documented.get(*method).is_some(),
                "{method} {path} missing from the document"
            );
        }
    }
}

/// Every documented operation is served, and answers only what the document
/// says it may, in the media type it says: with the owner's token and a
/// minimal body, without a token, with a body that is not JSON, with a bad
/// `Idempotency-Key` and with a `limit` out of range. Unknown ids stand in
/// for the path parameters.
async fn every_answer_is_documented(s: TestServer) {
    let doc: Value = reqwest::get(format!("{}/v1/openapi.json", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", "nonexistent").replace("{name}", "x:y");
        for (method, operation) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let check = Contract {
                operation,
                method: method.clone(),
                path: &concrete,
            };
            let response = s
                .send(
                    &s.owner.token,
                    method.clone(),
                    &concrete,
                    Some(json!({})),
                    &[],
                )
                .await;
            let body = check.documents(response).await;
            assert!(
                body["code"] != "route_not_found" && body["code"] != "method_not_allowed",
                "{method} {concrete}: {body}"
            );
            let request = || {
                s.client
                    .request(method.clone(), format!("{}{concrete}", s.base))
            };
            let with_token = || request().bearer_auth(&s.owner.token);
            let declares = |name: &str| {
                operation["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name))
            };
            let bad_key = "not printable ascii";
            let probes = [
                (
                    "no token (authentication comes before any other header)",
                    operation.get("security") != Some(&json!([{}])),
                    request()
                        .header("Idempotency-Key", bad_key)
                        .json(&json!({})),
                    StatusCode::UNAUTHORIZED,
                ),
                (
                    "a body that is not JSON",
                    operation["responses"].get("415").is_some(),
                    with_token().header("Content-Type", "text/plain").body("{}"),
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ),
                (
                    "a bad Idempotency-Key",
                    declares("Idempotency-Key"),
                    with_token()
                        .header("Idempotency-Key", bad_key)
                        .json(&json!({})),
                    StatusCode::BAD_REQUEST,
                ),
                (
                    "limit=0",
                    declares("limit"),
                    with_token().query(&[("limit", "0")]),
                    StatusCode::BAD_REQUEST,
                ),
            ];
            for (probe, applies, request, expected) in probes {
                if applies {
                    let response = request.send().await.unwrap();
                    assert_eq!(response.status(), expected, "{method} {concrete}: {probe}");
                    check.documents(response).await;
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 48);
}

/// One documented operation, and what it says it answers.
struct Contract<'a> {
    operation: &'a Value,
    method: Method,
    path: &'a str,
}

impl Contract<'_> {
    /// Asserts that `response`'s status and media type are documented;
    /// returns its body.
    async fn documents(&self, response: reqwest::Response) -> Value {
        let status = response.status();
        let media_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
        let text = response.text().await.unwrap();
        let (method, path) = (&self.method, self.path);
        let documented = &self.operation["responses"][status.as_str()];
        assert!(
            documented.is_object(),
            "{method} {path} answered {status}, undocumented: {text}"
        );
        match (documented["content"].as_object(), media_type) {
            (Some(content), Some(media_type)) => assert!(
                content.contains_key(&media_type),
                "{method} {path} {status}: {media_type} is not among {:?}",
                content.keys().collect::<Vec<_>>()
            ),
            (None, None) => assert!(text.is_empty(), "{method} {path} {status}: {text}"),
            (content, media_type) => {
                panic!("{method} {path} {status}: documented {content:?}, sent {media_type:?}")
            }
        }
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

async fn health_and_readiness(s: TestServer) {
    let health: Value = reqwest::get(format!("{}/healthz", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready: Value = reqwest::get(format!("{}/readyz", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert!(["sqlite", "postgres"].contains(&ready["store"].as_str().unwrap()));
}
