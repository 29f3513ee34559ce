//! Usage credits through the API: a metered key answers `rate_limited`
//! (429, SPEC §3's code for a quota too, with `credits` saying why) once
//! its balance is spent, only requests that pass every other check draw on
//! it, the balance can be topped up or set, and nodes
//! sharing a store never let through more requests than there are credits.

mod common;

use common::TestServer;
use keyward_core::KeyFormat;
use keyward_server::{Server, ServerConfig};
use keyward_store::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The verdict's code and what it says is left.
async fn draw(s: &TestServer, body: Value) -> (String, Value) {
    let (verdict, _) = s.verify(body).await;
    (
        verdict["code"].as_str().unwrap().to_owned(),
        verdict["credits"]["remaining"].clone(),
    )
}

async fn metered_keys_are_refused_once_their_credits_are_spent(s: TestServer) {
    s.catalog(&["orders:read"]).await;
    let (key, secret) = s
        .issue(json!({"name": "metered", "environment": "production",
            "permissions": ["orders:read"], "credits": {"remaining": 3}}))
        .await;
    assert_eq!(key["credits"]["remaining"], 3);
    assert_eq!(key["credits"]["refill"], Value::Null);
    let id = key["id"].as_str().unwrap();

    assert_eq!(
        draw(&s, json!({"key": secret})).await,
        ("valid".into(), json!(2))
    );
    // Refused by another check first: nothing is drawn.
    assert_eq!(
        draw(&s, json!({"key": secret, "permissions": ["orders:write"]})).await,
        ("insufficient_permissions".into(), Value::Null)
    );
    assert_eq!(
        draw(&s, json!({"key": secret, "cost": 2})).await,
        ("valid".into(), json!(0))
    );
    let (verdict, _) = s.verify(json!({"key": secret})).await;
    assert_eq!(
        (&verdict["code"], &verdict["status"], &verdict["valid"]),
        (&json!("rate_limited"), &json!(429), &json!(false))
    );
    assert_eq!(verdict["credits"]["remaining"], 0);
    assert_eq!(verdict["key"]["id"], id, "the key is named to its owner");
    assert_eq!(
        draw(&s, json!({"key": secret, "cost": 0})).await,
        ("rate_limited".into(), json!(0)),
        "a cost of 0 asks whether anything is left"
    );
    let (_, read) = s.get(&format!("/v1/keys/{id}")).await;
    assert_eq!(read["credits"]["remaining"], 0);

    // Topped up, then set.
    let path = format!("/v1/keys/{id}/credits");
    let (status, topped) = s.post(&path, json!({"add": 5})).await;
    assert_eq!(status, StatusCode::OK, "{topped}");
    assert_eq!(topped["credits"]["remaining"], 5);
    assert_eq!(
        draw(&s, json!({"key": secret, "cost": 6})).await,
        ("rate_limited".into(), json!(5)),
        "a cost above the balance takes nothing"
    );
    assert_eq!(
        draw(&s, json!({"key": secret, "cost": 5})).await,
        ("valid".into(), json!(0))
    );
    let (_, set) = s.post(&path, json!({"set": 1})).await;
    assert_eq!(set["credits"]["remaining"], 1);
    let (_, events) = s.get("/v1/audit-events?action=key.credits_changed").await;
    let changes: Vec<_> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["before"]["remaining"].clone(),
                e["after"]["remaining"].clone(),
            )
        })
        .collect();
    assert_eq!(changes, [(json!(0), json!(5)), (json!(0), json!(1))]);

    // Unmetered again: valid with no credits to report.
    let (status, plain) = s
        .patch(&format!("/v1/keys/{id}"), json!({"credits": null}))
        .await;
    assert_eq!(status, StatusCode::OK, "{plain}");
    assert_eq!(plain["credits"], Value::Null);
    for _ in 0..3 {
        assert_eq!(
            draw(&s, json!({"key": secret})).await,
            ("valid".into(), Value::Null)
        );
    }
    let (status, problem) = s.post(&path, json!({"add": 1})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");

    // Metered again with a refill; another account cannot touch it.
    let (_, remetered) = s
        .patch(
            &format!("/v1/keys/{id}"),
            json!({"credits": {"remaining": 2, "refill": {"interval": "monthly", "amount": 100, "day": 15}}}),
        )
        .await;
    assert_eq!(
        remetered["credits"]["refill"],
        json!({"interval": "monthly", "amount": 100, "day": 15})
    );
    let other = s.new_tenant().await;
    let (status, _) = s
        .call(
            &other.token,
            Method::POST,
            &path,
            Some(json!({"set": 1000})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, read) = s.get(&format!("/v1/keys/{id}")).await;
    assert_eq!(read["credits"]["remaining"], 2);
}

/// The rate limit runs first: a request it refuses spends no credit.
async fn rate_limited_requests_spend_no_credits(s: TestServer) {
    let (key, secret) = s
        .issue(json!({"name": "limited", "environment": "production",
            "rate_limit": {"limit": 1, "window_seconds": 3600}, "credits": {"remaining": 10}}))
        .await;
    assert_eq!(
        draw(&s, json!({"key": secret})).await,
        ("valid".into(), json!(9))
    );
    for _ in 0..3 {
        assert_eq!(
            draw(&s, json!({"key": secret})).await,
            ("rate_limited".into(), Value::Null)
        );
    }
    let (_, read) = s
        .get(&format!("/v1/keys/{}", key["id"].as_str().unwrap()))
        .await;
    assert_eq!(read["credits"]["remaining"], 9);
}

async fn credit_requests_name_the_field_at_fault(s: TestServer) {
    let create = format!("/v1/workspaces/{}/keys", s.owner.workspace_id);
    let key =
        |credits: Value| json!({"name": "k", "environment": "production", "credits": credits});
    let refused = [
        (key(json!({"remaining": -1})), "credits.remaining"),
        (
            key(json!({"remaining": 1_000_000_000_000_000_001u64})),
            "credits.remaining",
        ),
        (
            key(json!({"remaining": 1, "refill": {"interval": "weekly", "amount": 1}})),
            "credits.refill.interval",
        ),
        (
            key(json!({"remaining": 1, "refill": {"interval": "monthly", "amount": 1, "day": 32}})),
            "credits.refill.day",
        ),
        (
            key(json!({"remaining": 1, "refill": {"interval": "daily", "amount": 1, "day": 3}})),
            "credits.refill.day",
        ),
        (
            key(
                json!({"remaining": 1, "refill": {"interval": "daily", "amount": 2_000_000_000_000_000u64}}),
            ),
            "credits.refill.amount",
        ),
        (
            key(json!({"remaining": 1, "surprise": 1})),
            "credits.surprise",
        ),
    ];
    for (body, field) in refused {
        let (status, problem) = s.post(&create, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    let (_, listed) = s
        .get(&format!("/v1/workspaces/{}/keys", s.owner.workspace_id))
        .await;
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["name"] != "k"),
        "a refused key is not created"
    );

    let (key, secret) = s
        .issue(json!({"name": "metered", "environment": "production", "credits": {"remaining": 1}}))
        .await;
    let path = format!("/v1/keys/{}/credits", key["id"].as_str().unwrap());
    for (body, field) in [
        (json!({}), "add"),
        (json!({"add": 1, "set": 1}), "add"),
        (json!({"add": -2_000_000_000_000_000i64}), "add"),
        (json!({"set": -1}), "set"),
    ] {
        let (status, problem) = s.post(&path, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    let (status, problem) = s
        .call(
            &s.owner.token,
            Method::POST,
            "/v1/verify",
            Some(json!({"key": secret, "cost": 1_000_000_000_000_000_001u64})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["field"], "cost");
    assert_eq!(
        draw(&s, json!({"key": secret})).await,
        ("valid".into(), json!(0)),
        "refused requests drew nothing"
    );
}

/// The gateway's routes file and the tower layer set what a request
/// costs: `POST /reports` costs 5 on both, anything else 1. Refused, the
/// client learns when the credits refill.
async fn routes_set_what_a_request_costs(s: TestServer) {
    for base in [s.gateway_base.clone(), s.app.base.clone()] {
        let (key, secret) = s
            .issue(
                json!({"name": format!("metered for {base}"), "environment": "production",
                    "credits": {"remaining": 11, "refill": {"interval": "daily", "amount": 11}},
                }),
            )
            .await;
        let report = || {
            reqwest::Client::new()
                .post(format!("{base}/reports"))
                .header("X-API-Key", &secret)
                .send()
        };
        for _ in 0..2 {
            assert_eq!(report().await.unwrap().status(), StatusCode::OK, "{base}");
        }
        let refused = report().await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS, "{base}");
        let retry_after: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (1..=86_400).contains(&retry_after),
            "{base}: until the next 00:00 UTC, {retry_after}"
        );
        let problem: Value = refused.json().await.unwrap();
        assert_eq!(problem["code"], "rate_limited", "{base}: {problem}");
        assert_eq!(
            problem["detail"], "the API key has used its credits for now",
            "{base}: told apart from a rate limit"
        );
        let (_, read) = s
            .get(&format!("/v1/keys/{}", key["id"].as_str().unwrap()))
            .await;
        assert_eq!(read["credits"]["remaining"], 1, "{base}: 5 + 5 spent");
    }
}

/// Two nodes, each with its own connection pool on one database, verify
/// concurrently against one balance: exactly as many requests pass as
/// there were credits.
async fn nodes_sharing_a_store_never_overdraw(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let store = keyward_store::open(s.database_url()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, stopped) = oneshot::channel::<()>();
    let server = Server::with_config(store, KeyFormat::default(), ServerConfig::default());
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));

    const CREDITS: usize = 20;
    let (_, secret) = s
        .issue(json!({"name": "shared", "environment": "production", "credits": {"remaining": CREDITS}}))
        .await;
    let s = std::sync::Arc::new(s);
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..CREDITS + 12 {
        let (s, secret) = (s.clone(), secret.clone());
        let base = if n % 2 == 0 {
            s.base.clone()
        } else {
            second.clone()
        };
        requests.spawn(async move { s.code_on(&base, json!({"key": secret})).await });
    }
    let mut codes = Vec::new();
    while let Some(code) = requests.join_next().await {
        codes.push(code.unwrap());
    }
    let valid = codes.iter().filter(|c| *c == "valid").count();
    let refused = codes.iter().filter(|c| *c == "rate_limited").count();
    assert_eq!((valid, refused), (CREDITS, 12), "{codes:?}");
}

on_both_stores!(
    metered_keys_are_refused_once_their_credits_are_spent,
    rate_limited_requests_spend_no_credits,
    credit_requests_name_the_field_at_fault,
    routes_set_what_a_request_costs,
);

mod across_nodes {
    crate::on_both_backends!(nodes_sharing_a_store_never_overdraw);
    use super::nodes_sharing_a_store_never_overdraw;
}
