//! The audit log and member management through real HTTP on both stores.

mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_stores!(
    admin_actions_are_audited_with_their_actor,
    each_admin_endpoint_leaves_its_event,
    members_change_roles_and_leave,
);

/// Every audit event matching `query` (`&name=value…`), read `limit` per page.
async fn all_events(s: &TestServer, token: &str, query: &str, limit: u32) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/audit-events?limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = s.call(token, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        events.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return events,
        }
    }
}

fn actions(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

/// The owner's member id and their (only) management token's id.
async fn owner_ids(s: &TestServer) -> (String, String) {
    let (_, members) = s.get("/v1/members").await;
    let (_, tokens) = s.get("/v1/management-tokens").await;
    (
        members["data"][0]["id"].as_str().unwrap().to_owned(),
        tokens["data"][0]["id"].as_str().unwrap().to_owned(),
    )
}

async fn admin_actions_are_audited_with_their_actor(s: TestServer) {
    let (owner, owner_token) = owner_ids(&s).await;
    s.catalog(&["customers:read"]).await;
    let (key, secret) = s
        .issue(json!({"name": "Main Website Integration", "environment": "production"}))
        .await;
    let key_id = key["id"].as_str().unwrap();
    let (status, _) = s
        .patch(
            &format!("/v1/keys/{key_id}"),
            json!({"name": "Renamed", "permissions": ["customers:read"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .post(&format!("/v1/keys/{key_id}/disable"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, workspace) = s.post("/v1/workspaces", json!({"name": "Scratch"})).await;
    assert_eq!(status, StatusCode::CREATED, "{workspace}");
    let workspace_id = workspace["id"].as_str().unwrap().to_owned();
    let (status, _) = s
        .call(
            &s.owner.token,
            Method::DELETE,
            &format!("/v1/workspaces/{workspace_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let events = all_events(&s, &s.owner.token, "", 100).await;
    let seen = actions(&events);
    for expected in [
        "account.created",
        "permission.created",
        "key.created",
        "key.updated",
        "key.disabled",
        "workspace.created",
        "workspace.deleted",
    ] {
        assert!(seen.contains(&expected), "{expected} missing from {seen:?}");
    }
    assert_eq!(seen[0], "account.created");
    assert_eq!(seen.last(), Some(&"workspace.deleted"));
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    for window in events.windows(2) {
        assert_eq!(window[1]["prev_hash"], window[0]["hash"]);
    }
    // Setting the account up is the owner's doing, through no request;
    // requests are attributed to the member, their token and the TCP peer.
    let first_request = seen
        .iter()
        .position(|a| *a == "permission.created")
        .unwrap();
    for (i, event) in events.iter().enumerate() {
        let actor = if i < first_request {
            json!({"member_id": owner, "token_id": null, "ip": null})
        } else {
            json!({"member_id": owner, "token_id": owner_token, "ip": "127.0.0.1"})
        };
        assert_eq!(event["actor"], actor, "{event}");
    }
    // Paging walks the same events.
    assert_eq!(all_events(&s, &s.owner.token, "", 2).await, events);

    // What changed, and never a secret.
    let updated = all_events(&s, &s.owner.token, "&action=key.updated", 10).await;
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0]["object_id"], key_id);
    assert_eq!(
        updated[0]["before"],
        json!({"name": "Main Website Integration", "permissions": []})
    );
    assert_eq!(
        updated[0]["after"],
        json!({"name": "Renamed", "permissions": ["customers:read"]})
    );
    let (_, raw) = s.get("/v1/audit-events").await;
    assert!(!raw.to_string().contains(&secret));

    // Filters: object, actor, time window; bad times name the field.
    let on_key = all_events(&s, &s.owner.token, &format!("&object_id={key_id}"), 10).await;
    assert_eq!(
        actions(&on_key),
        ["key.created", "key.updated", "key.disabled"]
    );
    let by_owner = all_events(&s, &s.owner.token, &format!("&actor={owner}"), 100).await;
    assert_eq!(by_owner, events);
    let first_at = events[0]["at"].as_str().unwrap();
    let before_first = all_events(&s, &s.owner.token, &format!("&to={first_at}"), 10).await;
    assert!(before_first.is_empty());
    let since_first = all_events(&s, &s.owner.token, &format!("&from={first_at}"), 100).await;
    assert_eq!(since_first, events);
    let (status, problem) = s.get("/v1/audit-events?from=yesterday").await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("from"))
    );

    // Newest first: the same events backwards, two to a page, and with a
    // filter the filtered ones backwards.
    let newest_first = all_events(&s, &s.owner.token, "&order=desc", 2).await;
    let mut backwards = events.clone();
    backwards.reverse();
    assert_eq!(newest_first, backwards);
    let on_key_newest = all_events(
        &s,
        &s.owner.token,
        &format!("&order=desc&object_id={key_id}"),
        1,
    )
    .await;
    assert_eq!(
        actions(&on_key_newest),
        ["key.disabled", "key.updated", "key.created"]
    );
    for bad in ["newest", "DESC", ""] {
        let (status, problem) = s.get(&format!("/v1/audit-events?order={bad}")).await;
        assert_eq!(
            (status, problem["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("order")),
            "{bad:?}: {problem}"
        );
    }

    // Another account sees only its own chain.
    let other = s.new_tenant().await;
    let theirs = all_events(&s, &other.token, "", 100).await;
    assert_eq!(actions(&theirs)[0], "account.created");
    let ours: Vec<&Value> = events.iter().map(|e| &e["id"]).collect();
    assert!(
        theirs.iter().all(|e| !ours.contains(&&e["id"])),
        "{theirs:?}"
    );
    assert_eq!(theirs[0]["object_id"], other.account_id.as_str());
    let foreign = all_events(&s, &other.token, &format!("&object_id={key_id}"), 10).await;
    assert!(foreign.is_empty());

    // Reading the log takes manage_members.
    let (_, member) = s
        .post(
            "/v1/members",
            json!({"email": "dev@example.com", "role": "member", "permissions": ["manage_api_credentials"]}),
        )
        .await;
    let (_, token) = s
        .post(
            "/v1/management-tokens",
            json!({"name": "ci", "member_id": member["id"], "permissions": ["manage_api_credentials"]}),
        )
        .await;
    let (status, _) = s
        .call(
            token["secret"].as_str().unwrap(),
            Method::GET,
            "/v1/audit-events",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn members_change_roles_and_leave(s: TestServer) {
    let (owner, _) = owner_ids(&s).await;
    let (status, dev) = s
        .post(
            "/v1/members",
            json!({"email": "dev@example.com", "role": "member", "permissions": ["keys:verify"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dev}");
    let dev_id = dev["id"].as_str().unwrap().to_owned();
    let dev_path = format!("/v1/members/{dev_id}");

    let (status, changed) = s
        .patch(
            &dev_path,
            json!({"permissions": ["manage_api_credentials"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["permissions"], json!(["manage_api_credentials"]));
    let (status, problem) = s
        .patch(
            &dev_path,
            json!({"role": "admin", "permissions": ["keys:verify"]}),
        )
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("permissions"))
    );
    let (status, problem) = s.patch(&dev_path, json!({"role": "boss"})).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("role"))
    );
    let (status, admin) = s.patch(&dev_path, json!({"role": "admin"})).await;
    assert_eq!(status, StatusCode::OK, "{admin}");
    assert_eq!(
        (admin["role"].as_str(), &admin["permissions"]),
        (Some("admin"), &json!([]))
    );

    // The last owner stays.
    let owner_path = format!("/v1/members/{owner}");
    let (status, problem) = s.patch(&owner_path, json!({"role": "admin"})).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("last_owner"))
    );
    let (status, problem) = s
        .call(&s.owner.token, Method::DELETE, &owner_path, None)
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("last_owner"))
    );

    // Only owners make or unmake owners: an admin may not, even for themself.
    let (_, admin_token) = s
        .post(
            "/v1/management-tokens",
            json!({"name": "admin", "member_id": dev_id, "permissions": ["manage_members"]}),
        )
        .await;
    let admin_token = admin_token["secret"].as_str().unwrap().to_owned();
    for (path, body) in [
        (&dev_path, json!({"role": "owner"})),
        (&owner_path, json!({"role": "member"})),
    ] {
        let (status, problem) = s.call(&admin_token, Method::PATCH, path, Some(body)).await;
        assert_eq!(
            (status, problem["field"].as_str()),
            (StatusCode::FORBIDDEN, Some("role")),
            "{path}"
        );
    }
    let (status, _) = s
        .call(&admin_token, Method::DELETE, &owner_path, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // With a second owner, the first may step down.
    let (status, _) = s.patch(&dev_path, json!({"role": "owner"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, stepped) = s.patch(&owner_path, json!({"role": "admin"})).await;
    assert_eq!(status, StatusCode::OK, "{stepped}");

    // Another account's member is not there.
    let other = s.new_tenant().await;
    for method in [Method::PATCH, Method::DELETE] {
        let (status, problem) = s
            .call(
                &other.token,
                method.clone(),
                &dev_path,
                Some(json!({"role": "member"})),
            )
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{method}"
        );
    }

    // Removing a member stops their tokens at once.
    let (_, leaver) = s
        .post(
            "/v1/members",
            json!({"email": "leaver@example.com", "role": "member", "permissions": ["keys:verify"]}),
        )
        .await;
    let leaver_id = leaver["id"].as_str().unwrap().to_owned();
    let (_, token) = s
        .post(
            "/v1/management-tokens",
            json!({"name": "ci", "member_id": leaver_id, "permissions": ["keys:verify"]}),
        )
        .await;
    let leaver_token = token["secret"].as_str().unwrap().to_owned();
    let verify = json!({"key": "kw_live_nothing"});
    let (status, _) = s
        .call(
            &leaver_token,
            Method::POST,
            "/v1/verify",
            Some(verify.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let leaver_path = format!("/v1/members/{leaver_id}");
    let (status, _) = s
        .call(&s.owner.token, Method::DELETE, &leaver_path, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s
        .call(&leaver_token, Method::POST, "/v1/verify", Some(verify))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s
        .call(&s.owner.token, Method::DELETE, &leaver_path, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Each change is in the audit log, by whoever made it.
    let events = all_events(&s, &s.owner.token, &format!("&object_id={dev_id}"), 100).await;
    assert_eq!(
        actions(&events),
        [
            "member.created",
            "member.updated",
            "member.updated",
            "member.updated"
        ]
    );
    assert_eq!(
        events[2]["after"],
        json!({"role": "admin", "permissions": []})
    );
    let removed = all_events(&s, &s.owner.token, "&action=member.deleted", 10).await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0]["object_id"], leaver_id.as_str());
    assert_eq!(removed[0]["actor"]["member_id"], owner.as_str());
    let stepped_down = all_events(&s, &s.owner.token, &format!("&object_id={owner}"), 10).await;
    assert_eq!(actions(&stepped_down), ["member.updated"]);
}

/// The account's latest audit event.
async fn newest_event(s: &TestServer) -> Value {
    let events = all_events(s, &s.owner.token, "", 100).await;
    events.last().unwrap().clone()
}

/// Calls `method path` as the owner, expecting success, and returns the body.
async fn ok(s: &TestServer, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, body) = s.call(&s.owner.token, method.clone(), path, body).await;
    assert!(status.is_success(), "{method} {path} → {status} {body}");
    body
}

async fn each_admin_endpoint_leaves_its_event(s: TestServer) {
    let (owner, owner_token) = owner_ids(&s).await;
    let ws = s.owner.workspace_id.clone();
    let expect = |action: &'static str, object: String, event: Value| {
        assert_eq!(event["action"], action, "{event}");
        assert_eq!(event["object_id"], object.as_str(), "{event}");
        assert_eq!(event["actor"]["member_id"], owner.as_str(), "{event}");
        assert_eq!(event["actor"]["token_id"], owner_token.as_str(), "{event}");
    };

    ok(
        &s,
        Method::POST,
        "/v1/permissions",
        Some(json!({"name": "a:b"})),
    )
    .await;
    expect("permission.created", "a:b".into(), newest_event(&s).await);
    ok(&s, Method::DELETE, "/v1/permissions/a:b", None).await;
    expect("permission.deleted", "a:b".into(), newest_event(&s).await);

    let env = ok(
        &s,
        Method::POST,
        &format!("/v1/workspaces/{ws}/environments"),
        Some(json!({"name": "qa", "tag": "qa"})),
    )
    .await;
    expect(
        "environment.created",
        env["id"].as_str().unwrap().into(),
        newest_event(&s).await,
    );
    ok(
        &s,
        Method::PATCH,
        &format!("/v1/workspaces/{ws}"),
        Some(json!({"name": "Renamed"})),
    )
    .await;
    let renamed = newest_event(&s).await;
    expect("workspace.updated", ws.clone(), renamed.clone());
    assert_eq!(renamed["after"], json!({"name": "Renamed"}));

    let entry = ok(
        &s,
        Method::POST,
        "/v1/ip-allowlist",
        Some(json!({"address": "203.0.113.0/24", "workspace_ids": [ws]})),
    )
    .await;
    let entry_id = entry["id"].as_str().unwrap().to_owned();
    expect(
        "ip_allowlist.created",
        entry_id.clone(),
        newest_event(&s).await,
    );
    ok(
        &s,
        Method::DELETE,
        &format!("/v1/ip-allowlist/{entry_id}"),
        None,
    )
    .await;
    let deleted = newest_event(&s).await;
    expect("ip_allowlist.deleted", entry_id, deleted.clone());
    assert_eq!(deleted["before"]["cidr"], "203.0.113.0/24");

    let token = ok(
        &s,
        Method::POST,
        "/v1/management-tokens",
        Some(json!({"name": "ci", "permissions": ["keys:verify"]})),
    )
    .await;
    let token_id = token["token"]["id"].as_str().unwrap().to_owned();
    let created = newest_event(&s).await;
    expect(
        "management_token.created",
        token_id.clone(),
        created.clone(),
    );
    // The token's hint is recorded, its secret never.
    let secret = token["secret"].as_str().unwrap();
    assert!(!created.to_string().contains(secret));
    assert!(created["after"]["hint"].is_string(), "{created}");
    ok(
        &s,
        Method::DELETE,
        &format!("/v1/management-tokens/{token_id}"),
        None,
    )
    .await;
    expect("management_token.deleted", token_id, newest_event(&s).await);

    let member = ok(
        &s,
        Method::POST,
        "/v1/members",
        Some(json!({"email": "m@example.com", "role": "member"})),
    )
    .await;
    // A new person: the member and their invitation, one transaction.
    let events = all_events(&s, &s.owner.token, "", 100).await;
    let [.., created, invited] = events.as_slice() else {
        panic!("two events expected");
    };
    expect(
        "member.created",
        member["id"].as_str().unwrap().into(),
        created.clone(),
    );
    assert_eq!(invited["after"]["member_id"], member["id"]);
    expect(
        "invitation.created",
        invited["object_id"].as_str().unwrap().into(),
        invited.clone(),
    );
    assert!(
        member["invitation"]["path"]
            .as_str()
            .unwrap()
            .starts_with("/invitations/")
    );

    let (key, _) = s
        .issue(json!({"name": "Audited", "environment": "production"}))
        .await;
    let key_id = key["id"].as_str().unwrap().to_owned();
    expect("key.created", key_id.clone(), newest_event(&s).await);
    for (verb, action) in [
        ("disable", "key.disabled"),
        ("enable", "key.enabled"),
        ("revoke", "key.revoked"),
    ] {
        ok(&s, Method::POST, &format!("/v1/keys/{key_id}/{verb}"), None).await;
        expect(action, key_id.clone(), newest_event(&s).await);
    }
    // A refused change leaves no event.
    let before = newest_event(&s).await;
    let (status, _) = s
        .post(&format!("/v1/keys/{key_id}/enable"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(newest_event(&s).await, before);
}
