//! The console over HTTP, on both stores: sign-in and its limits, sessions,
//! CSRF, what members without the permission can reach, and one account
//! trying to reach another's objects. The browser flows are in
//! `console_browser.rs`.

mod common;

use common::{OWNER_PASSWORD, TestServer, eventually};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;
use std::io::Read;
use std::time::Duration;

/// A browser stand-in: keeps cookies, follows no redirect.
struct Console {
    base: String,
    client: reqwest::Client,
    cookies: std::collections::BTreeMap<String, String>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
    headers: reqwest::header::HeaderMap,
}

impl Page {
    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("a form with a CSRF token") + marker.len();
        let end = self.body[start..].find('"').unwrap();
        self.body[start..start + end].to_owned()
    }
}

impl Console {
    fn new(server: &TestServer) -> Self {
        Self {
            base: server.base.clone(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Default::default(),
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let response = self.fetch(request).await;
        Page {
            status: response.status(),
            location: response
                .headers()
                .get(LOCATION)
                .map(|l| l.to_str().unwrap().to_owned()),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    /// Sends with the cookies kept, and keeps those the answer sets.
    async fn fetch(&mut self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let header: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let request = match header.is_empty() {
            false => request.header(COOKIE, header.join("; ")),
            true => request,
        };
        let response = request.send().await.expect("request");
        for set in response.headers().get_all(SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            match value {
                "" => self.cookies.remove(name),
                _ => self.cookies.insert(name.to_owned(), value.to_owned()),
            };
        }
        response
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.client.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let request = self.client.post(format!("{}{path}", self.base)).form(form);
        self.send(request).await
    }

    async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        self.post(
            "/sign-in",
            &[
                ("email", email),
                ("password", password),
                ("next", "/credentials"),
            ],
        )
        .await
    }

    /// A form post with the CSRF token of `page`.
    async fn submit(&mut self, from: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get(from).await.csrf();
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        self.post(action, &form).await
    }
}

async fn signed_in_owner(server: &TestServer) -> Console {
    let mut console = Console::new(server);
    let page = console.sign_in(&server.owner.email, OWNER_PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some("/credentials"));
    console
}

async fn sign_in_and_out(server: TestServer) {
    let mut console = Console::new(&server);
    // Signed out, pages send you to sign in, remembering where you were.
    let page = console.get("/credentials?status=active").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.location.as_deref(),
        Some("/sign-in?next=%2Fcredentials%3Fstatus%3Dactive")
    );
    // A wrong password and an unknown email read the same.
    let wrong = console
        .sign_in(&server.owner.email, "not the password")
        .await;
    let unknown = console.sign_in("nobody@example.com", OWNER_PASSWORD).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    let message = "That email and password do not match an account.";
    assert!(wrong.body.contains(message) && unknown.body.contains(message));
    assert!(console.cookies.is_empty());

    let page = console.sign_in(&server.owner.email, OWNER_PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let set_cookie = page.headers.get(SET_COOKIE).unwrap().to_str().unwrap();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(
            set_cookie.contains(attribute),
            "{attribute} missing: {set_cookie}"
        );
    }
    assert!(set_cookie.starts_with("__Host-keyward_session="));
    let page = console.get("/credentials").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&server.owner.email));
    assert_eq!(page.headers[CACHE_CONTROL], "no-store");

    // Signing out ends the session on the server: the old cookie is dead.
    let stolen = console.cookies.clone();
    let page = console.submit("/credentials", "/sign-out", &[]).await;
    assert_eq!(page.location.as_deref(), Some("/sign-in"));
    console.cookies = stolen;
    assert_eq!(
        console.get("/credentials").await.status,
        StatusCode::SEE_OTHER
    );
    let (_, audit) = server.get("/v1/audit-events?action=session.ended").await;
    assert_eq!(audit["data"].as_array().unwrap().len(), 1);

    // Another site's form cannot sign anyone in (login CSRF).
    let request = console
        .client
        .post(format!("{}/sign-in", console.base))
        .header("Origin", "https://evil.example")
        .form(&[
            ("email", server.owner.email.as_str()),
            ("password", OWNER_PASSWORD),
        ]);
    let page = console.send(request).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(!page.headers.contains_key(SET_COOKIE));

    // Only local paths are followed after sign-in.
    let mut console = Console::new(&server);
    let page = console
        .post(
            "/sign-in",
            &[
                ("email", &server.owner.email),
                ("password", OWNER_PASSWORD),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(page.location.as_deref(), Some("/"));
}

async fn sign_in_attempts_are_rate_limited(server: TestServer) {
    let mut console = Console::new(&server);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(
            console
                .sign_in(&server.owner.email, "wrong password!")
                .await
                .status,
        );
    }
    assert!(
        statuses[..10]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED)
    );
    assert_eq!(statuses[10], StatusCode::TOO_MANY_REQUESTS);
    // Even the right password waits now.
    let page = console.sign_in(&server.owner.email, OWNER_PASSWORD).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(page.body.contains("Too many sign-in attempts"));
}

async fn forms_need_the_session_csrf_token(server: TestServer) {
    let mut console = signed_in_owner(&server).await;
    let key = format!("/keys/{}", server.owner.primary_key_id);
    let page = console
        .post(&format!("{key}/rename"), &[("name", "Hijacked")])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("This form has expired"));
    let page = console
        .post(
            &format!("{key}/rename"),
            &[("csrf", "0".repeat(64).as_str()), ("name", "Hijacked")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // The right token from another site's page is refused too.
    let csrf = console.get("/credentials").await.csrf();
    let request = console
        .client
        .post(format!("{}{key}/rename", console.base))
        .header("Origin", "https://evil.example")
        .form(&[("csrf", csrf.as_str()), ("name", "Hijacked")]);
    assert_eq!(console.send(request).await.status, StatusCode::FORBIDDEN);
    let (_, stored) = server.get(&format!("/v1{key}")).await;
    assert_eq!(stored["name"], "Primary");
    // With the token, it works and says so on the next page.
    let page = console
        .submit(
            "/credentials",
            &format!("{key}/rename"),
            &[("name", "Website")],
        )
        .await;
    assert_eq!(page.location.as_deref(), Some(key.as_str()));
    let page = console.get(&key).await;
    assert!(page.body.contains("Renamed to “Website”."), "{}", page.body);
    // The message shows once.
    assert!(!console.get(&key).await.body.contains("Renamed to"));
}

async fn members_without_the_permission_see_no_credentials(server: TestServer) {
    let (status, created) = server
        .post(
            "/v1/members",
            json!({"email": "analyst@example.com", "role": "member"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = created["invitation"]["path"].as_str().unwrap().to_owned();

    let mut console = Console::new(&server);
    assert_eq!(console.get(&path).await.status, StatusCode::OK);
    let short = console
        .post(&path, &[("password", "short"), ("confirm", "short")])
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(short.body.contains("at least 12 characters"));
    let password = "a long enough password";
    let page = console
        .post(&path, &[("password", password), ("confirm", password)])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    // An invitation works once.
    let again = Console::new(&server)
        .post(&path, &[("password", password), ("confirm", password)])
        .await;
    assert_eq!(again.status, StatusCode::GONE);

    let page = console.get("/account").await;
    assert!(page.body.contains("no-credentials-access"));
    assert!(!page.body.contains("href=\"/credentials\""));
    for path in [
        "/credentials",
        "/workspaces",
        "/logs",
        "/jobs",
        "/members",
        "/tokens",
        "/audit",
    ] {
        let page = console.get(path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        assert!(page.body.contains("manage_"), "{path}: {}", page.body);
    }
    let key = format!("/keys/{}", server.owner.primary_key_id);
    let page = console
        .submit("/account", &format!("{key}/disable"), &[])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let (_, stored) = server.get(&format!("/v1{key}")).await;
    assert_eq!(stored["status"], "active");

    // Granted the permission, the same session sees credentials at once.
    let member = created["id"].as_str().unwrap();
    let (status, _) = server
        .patch(
            &format!("/v1/members/{member}"),
            json!({"permissions": ["manage_api_credentials"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(console.get("/credentials").await.status, StatusCode::OK);
    assert_eq!(console.get("/members").await.status, StatusCode::FORBIDDEN);
    // Removed, the session ends.
    server
        .call(
            &server.owner.token,
            reqwest::Method::DELETE,
            &format!("/v1/members/{member}"),
            None,
        )
        .await;
    assert_eq!(
        console.get("/credentials").await.status,
        StatusCode::SEE_OTHER
    );
}

async fn another_accounts_objects_are_not_found(server: TestServer) {
    let other = server.new_tenant().await;
    let mut console = signed_in_owner(&server).await;
    let theirs = format!("/keys/{}", other.primary_key_id);
    assert_eq!(console.get(&theirs).await.status, StatusCode::NOT_FOUND);
    let page = console
        .submit("/credentials", &format!("{theirs}/disable"), &[])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let page = console.get(page.location.as_deref().unwrap()).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let page = console
        .get(&format!("/workspaces/{}", other.workspace_id))
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let (status, key) = server
        .call(
            &other.token,
            reqwest::Method::GET,
            &format!("/v1{theirs}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(key["status"], "active");
    // Mistyped addresses are pages too, not problem documents.
    let page = console.get(&format!("{theirs}/disable")).await;
    assert_eq!(page.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(page.body.contains("<html"));
    let page = console.get("/no-such-page").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.body.contains("There is no page here."));
    // Pages never list them either.
    assert!(
        !console
            .get("/credentials")
            .await
            .body
            .contains(&other.primary_key_id)
    );
}

async fn create_shows_the_secret_once_and_errors_readably(server: TestServer) {
    server.catalog(&["customers:read"]).await;
    let mut console = signed_in_owner(&server).await;
    let workspace = &server.owner.workspace_id;
    let form = |name: &'static str, limit: &'static str| {
        vec![
            ("name", name),
            ("environment", "production"),
            ("kind", "secret"),
            ("permissions", "customers:read"),
            ("rate_limit", limit),
            ("rate_window", "60"),
        ]
    };
    let refused = console
        .submit(
            "/credentials/new",
            &format!("/workspaces/{workspace}/credentials"),
            &form("Reporting", "0"),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused.body.contains("rate_limit.limit"),
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains("value=\"Reporting\""),
        "the form keeps what was typed"
    );

    let created = console
        .submit(
            "/credentials/new",
            &format!("/workspaces/{workspace}/credentials"),
            &form("Reporting", "100"),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(created.headers[CACHE_CONTROL], "no-store");
    let secret = &shown_secret(&created);
    assert!(secret.starts_with("kw_live_"), "{secret}");
    assert!(created.body.contains("will not be shown again"));
    let verdict = server
        .code(json!({"key": secret, "permissions": ["customers:read"]}))
        .await;
    assert_eq!(verdict, "valid");
    // Nowhere else.
    for page in ["/credentials", "/logs", "/audit"] {
        assert!(!console.get(page).await.body.contains(secret), "{page}");
    }
}

/// An account with more audit events and jobs than a page holds: the
/// console shows the latest (it once showed the oldest page, reversed, so
/// a busy account's new events and jobs never appeared).
async fn activity_pages_show_the_latest_first(server: TestServer) {
    let names: Vec<String> = (0..110).map(|i| format!("scope{i:03}:read")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    server.catalog(&names).await;
    let mut console = signed_in_owner(&server).await;
    let audit = console.get("/audit").await;
    assert_eq!(audit.status, StatusCode::OK);
    let latest = audit.body.find("scope109:read").expect("the latest event");
    let earlier = audit.body.find("scope108:read").expect("the one before");
    assert!(latest < earlier, "newest first");
    assert!(
        !audit.body.contains("account.created"),
        "the oldest is past the page"
    );
    // The next page carries on from there, back to the account's start.
    let older = console.get(&link_to(&audit.body, "Older →")).await;
    assert!(older.body.contains("account.created"), "{}", older.body);
    assert!(!older.body.contains("scope109:read"));
    assert!(!older.body.contains("Older →"), "the last page");
    assert_eq!(
        link_to(&older.body, "← Newest"),
        "/audit?",
        "back to the first page"
    );

    let workspace = &server.owner.workspace_id;
    let mut started = Vec::new();
    for _ in 0..51 {
        let body = json!({"kind": "disable_keys", "workspace_id": workspace});
        let (status, job) = server.post("/v1/jobs", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        started.push(job["id"].as_str().unwrap().to_owned());
    }
    let jobs = console.get("/jobs").await;
    let shown = |id: &str| jobs.body.find(id);
    let (newest, next) = (shown(&started[50]), shown(&started[49]));
    assert!(newest.is_some() && newest < next, "newest first");
    assert_eq!(shown(&started[0]), None, "the first is past the page");
    let older = console.get(&link_to(&jobs.body, "Older →")).await;
    assert!(older.body.contains(&started[0]), "the next page reaches it");
}

async fn the_log_page_exports_what_its_filter_shows(server: TestServer) {
    let (_, secret) = server
        .issue(json!({"name": "exported", "environment": "production"}))
        .await;
    assert_eq!(server.code(json!({"key": secret})).await, "valid");
    assert_eq!(
        server.code(json!({"key": "kw_live_nope"})).await,
        "malformed_key"
    );
    eventually(Duration::from_secs(15), || async {
        let (_, page) = server.get("/v1/logs").await;
        (page["data"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;

    let mut console = signed_in_owner(&server).await;
    let logs = console.get("/logs?outcome=valid").await;
    assert!(
        logs.body
            .contains(r#"<input type="hidden" name="outcome" value="valid">"#),
        "the export carries the filter"
    );
    let started = console
        .submit(
            "/logs",
            "/jobs/export",
            &[
                ("outcome", "valid"),
                ("format", "csv"),
                ("from", ""),
                ("key_id", ""),
            ],
        )
        .await;
    let said = flash_after(&mut console, &started).await;
    assert!(said.contains("Export started"), "{said}");
    let (_, jobs) = server.get("/v1/jobs").await;
    let id = jobs["data"][0]["id"].as_str().unwrap().to_owned();
    let link = format!("/jobs/{id}/export");
    let mut shown = String::new();
    for _ in 0..100 {
        shown = console.get("/jobs").await.body;
        if shown.contains(&link) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shown.contains(&link), "a download link once done: {shown}");

    let request = console.client.get(format!("{}{link}", console.base));
    let file = console.fetch(request).await;
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(file.headers()["content-type"], "application/gzip");
    let bytes = file.bytes().await.unwrap();
    let mut csv = String::new();
    flate2::read::MultiGzDecoder::new(bytes.as_ref())
        .read_to_string(&mut csv)
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "the header and the one valid verification: {csv}"
    );
    assert!(lines[1].contains(",valid,200,"), "{csv}");

    // A bad format is the person's mistake, shown on the page.
    let refused = console
        .submit("/logs", "/jobs/export", &[("format", "xml")])
        .await;
    assert!(flash_after(&mut console, &refused).await.contains("format"));
    // Another account's console does not reach the file.
    let other = server.new_tenant().await;
    let mut theirs = Console::new(&server);
    theirs.sign_in(&other.email, OWNER_PASSWORD).await;
    assert_eq!(theirs.get(&link).await.status, StatusCode::NOT_FOUND);
}

/// Workspaces and tokens past the API's 100 a page all show (the console
/// once read one page of each and stopped there without a word).
async fn whole_lists_are_shown_past_one_page(server: TestServer) {
    for i in 0..101 {
        let (status, body) = server
            .post("/v1/workspaces", json!({"name": format!("Project {i:03}")}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = server
            .post(
                "/v1/management-tokens",
                json!({"name": format!("Script {i:03}"), "permissions": ["keys:verify"]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let mut console = signed_in_owner(&server).await;
    let workspaces = console.get("/workspaces").await.body;
    assert!(workspaces.contains("Project 000") && workspaces.contains("Project 100"));
    let tokens = console.get("/tokens").await.body;
    assert!(tokens.contains("Script 000") && tokens.contains("Script 100"));
    // The workspace choices of other pages too.
    let jobs = console.get("/jobs").await.body;
    assert!(jobs.contains("Project 100"));
}

/// The `href` of the page's link whose text is `text`, its `&` unescaped
/// (askama writes `&#38;`).
fn link_to(body: &str, text: &str) -> String {
    let end = body
        .find(&format!("\">{text}</a>"))
        .unwrap_or_else(|| panic!("no {text:?} link in {body}"));
    let start = body[..end].rfind("href=\"").unwrap() + "href=\"".len();
    let href = &body[start..end];
    href[..href.find('"').unwrap_or(href.len())].replace("&#38;", "&")
}

/// The request-log page past its first 100, with its filter kept.
async fn the_log_page_pages_through_its_filter(server: TestServer) {
    let now_ms = common::now_ms();
    let logs: Vec<_> = (0..250)
        .map(|n| keyward_store::NewRequestLog {
            account_id: server.owner.account_id.clone(),
            at: now_ms - n,
            key_id: None,
            workspace_id: None,
            environment: Some("production".into()),
            client_ip: format!("198.51.100.{}", n % 200).parse().ok(),
            permissions: vec![],
            code: if n % 2 == 0 {
                "unknown_key"
            } else {
                "malformed_key"
            }
            .into(),
            latency_us: 3,
            method: None,
            path: None,
        })
        .collect();
    server
        .store
        .insert_request_logs(&logs.iter().collect())
        .await
        .unwrap();
    let mut console = signed_in_owner(&server).await;
    let rows = |body: &str| body.matches("<td class=\"small\">3 µs</td>").count();

    let first = console.get("/logs").await;
    assert_eq!(rows(&first.body), 100);
    assert!(!first.body.contains("← Newest"));
    let second = console.get(&link_to(&first.body, "Older →")).await;
    assert_eq!(rows(&second.body), 100);
    let third = console.get(&link_to(&second.body, "Older →")).await;
    assert_eq!(rows(&third.body), 50);
    assert!(!third.body.contains("Older →"), "the last page");
    assert_eq!(link_to(&third.body, "← Newest"), "/logs?");

    // A filtered page keeps its filter on the next one.
    let unknown = console.get("/logs?outcome=unknown_key").await;
    assert_eq!(rows(&unknown.body), 100);
    let next = link_to(&unknown.body, "Older →");
    assert!(
        next.starts_with("/logs?outcome=unknown_key&cursor="),
        "{next}"
    );
    let rest = console.get(&next).await;
    assert_eq!(rows(&rest.body), 25);
    assert!(!rest.body.contains("malformed_key</span>"), "{}", rest.body);
    let bad = console.get("/logs?cursor=%%%").await;
    assert_eq!(bad.status, StatusCode::OK, "a readable mistake");
    assert!(bad.body.contains("cursor"), "{}", bad.body);
}

/// The one `data-testid="secret"` value of a secret page.
fn shown_secret(page: &Page) -> String {
    let marker = "data-testid=\"secret\">";
    let start = page.body.find(marker).expect("a secret on the page") + marker.len();
    let end = page.body[start..].find('<').unwrap();
    page.body[start..start + end].to_owned()
}

/// A key created with credits in the console shows its balance, is
/// refused with 429 once it is spent, and is topped up from its page; a
/// key without credits can be metered from there.
async fn a_metered_key_shows_and_changes_its_credits(server: TestServer) {
    let mut console = signed_in_owner(&server).await;
    let workspace = server.owner.workspace_id.clone();
    let created = console
        .submit(
            "/credentials/new",
            &format!("/workspaces/{workspace}/credentials"),
            &[
                ("name", "Metered"),
                ("environment", "production"),
                ("kind", "secret"),
                ("credits", "1"),
                ("refill", "daily"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let secret = shown_secret(&created);
    assert_eq!(server.code(json!({"key": secret})).await, "valid");
    assert_eq!(server.code(json!({"key": secret})).await, "rate_limited");

    let (_, keys) = server
        .get(&format!("/v1/workspaces/{workspace}/keys"))
        .await;
    let id = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "Metered")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = console.get(&format!("/keys/{id}")).await;
    assert!(
        page.body
            .contains("0 left, set back to 1 every day (00:00 UTC)"),
        "{}",
        page.body
    );
    let refused = console
        .submit(
            &format!("/keys/{id}"),
            &format!("/keys/{id}/credits"),
            &[("change", "set"), ("amount", "-3")],
        )
        .await;
    assert!(flash_after(&mut console, &refused).await.contains("amount"));
    let topped = console
        .submit(
            &format!("/keys/{id}"),
            &format!("/keys/{id}/credits"),
            &[("change", "add"), ("amount", "2")],
        )
        .await;
    assert!(
        flash_after(&mut console, &topped).await.contains("2 left"),
        "topped up"
    );
    assert_eq!(server.code(json!({"key": secret})).await, "valid");

    let page = console.get(&format!("/keys/{id}")).await;
    assert!(
        page.body.contains(r#"<option value="daily" selected>"#),
        "the metering form shows the key's refill"
    );
    let remetered = console
        .submit(
            &format!("/keys/{id}"),
            &format!("/keys/{id}/credits"),
            &[("change", "meter"), ("amount", "7"), ("refill", "monthly")],
        )
        .await;
    assert!(
        flash_after(&mut console, &remetered)
            .await
            .contains("7 left, set back to 7 on day 1 of every month"),
        "balance and refill replaced"
    );
    let (_, view) = server.get(&format!("/v1/keys/{id}")).await;
    assert_eq!(view["credits"]["remaining"], 7);
    assert_eq!(view["credits"]["refill"]["interval"], "monthly");
    let list = console.get("/credentials").await;
    assert!(list.body.contains("<td>7 left</td>"), "{}", list.body);
    let stopped = console
        .submit(
            &format!("/keys/{id}"),
            &format!("/keys/{id}/credits"),
            &[("change", "unlimited")],
        )
        .await;
    assert!(
        flash_after(&mut console, &stopped)
            .await
            .contains("No longer metered")
    );
    let (_, view) = server.get(&format!("/v1/keys/{id}")).await;
    assert!(view["credits"].is_null(), "{view}");
    for _ in 0..10 {
        assert_eq!(server.code(json!({"key": secret})).await, "valid");
    }

    let (plain, plain_secret) = server
        .issue(json!({"name": "plain", "environment": "production"}))
        .await;
    let plain_id = plain["id"].as_str().unwrap();
    let page = console.get(&format!("/keys/{plain_id}")).await;
    assert!(page.body.contains("Unlimited") && page.body.contains("Give credits"));
    let metered = console
        .submit(
            &format!("/keys/{plain_id}"),
            &format!("/keys/{plain_id}/credits"),
            &[("change", "meter"), ("amount", "0"), ("refill", "")],
        )
        .await;
    assert!(
        flash_after(&mut console, &metered)
            .await
            .contains("Metered: 0 left")
    );
    assert_eq!(
        server.code(json!({"key": plain_secret})).await,
        "rate_limited"
    );
}

/// The flash message the page after a redirect shows.
async fn flash_after(console: &mut Console, page: &Page) -> String {
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let next = console.get(page.location.as_deref().unwrap()).await;
    let start = next.body.find("class=\"flash").expect("a flash message");
    let end = start + next.body[start..].find("</").unwrap();
    next.body[start..end].to_owned()
}

async fn management_tokens_are_shown_once_and_revoked_at_once(server: TestServer) {
    let mut console = signed_in_owner(&server).await;
    let (_, before) = server.get("/v1/management-tokens").await;
    let count = |list: &serde_json::Value| list["data"].as_array().unwrap().len();

    // Refusals name the field, and create nothing.
    for (fields, field) in [
        (vec![("name", "CI"), ("lifetime", "30")], "permissions"),
        (
            vec![
                ("name", "CI"),
                ("permissions", "keys:all"),
                ("lifetime", "30"),
            ],
            "permissions",
        ),
        (
            vec![
                ("name", "CI"),
                ("permissions", "keys:verify"),
                ("lifetime", "3650"),
            ],
            "lifetime",
        ),
        (
            vec![
                ("name", " "),
                ("permissions", "keys:verify"),
                ("lifetime", "30"),
            ],
            "name",
        ),
    ] {
        let page = console.submit("/tokens", "/tokens", &fields).await;
        let flash = flash_after(&mut console, &page).await;
        assert!(
            flash.contains("error") && flash.contains(field),
            "{field}: {flash}"
        );
    }
    // A token never holds more than the member it acts for.
    let (_, analyst) = server
        .post(
            "/v1/members",
            json!({"email": "analyst@example.com", "role": "member"}),
        )
        .await;
    let analyst = analyst["id"].as_str().unwrap();
    let page = console
        .submit(
            "/tokens",
            "/tokens",
            &[
                ("name", "Analyst's script"),
                ("member_id", analyst),
                ("permissions", "manage_members"),
                ("lifetime", "30"),
            ],
        )
        .await;
    let flash = flash_after(&mut console, &page).await;
    assert!(flash.contains("does not hold"), "{flash}");
    let (_, after) = server.get("/v1/management-tokens").await;
    assert_eq!(count(&after), count(&before), "nothing half-made");

    // Created: the token is shown once, and works at once.
    let created = console
        .submit(
            "/tokens",
            "/tokens",
            &[
                ("name", "Checkout service"),
                ("member_id", ""),
                ("permissions", "keys:verify"),
                ("permissions", "manage_api_credentials"),
                ("lifetime", "30"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(created.headers[CACHE_CONTROL], "no-store");
    assert!(created.body.contains("will not be shown again"));
    let token = shown_secret(&created);
    assert!(token.starts_with("kw_mgmt_"), "{token}");
    let call = |path: &'static str| server.call(&token, reqwest::Method::GET, path, None);
    assert_eq!(call("/v1/workspaces").await.0, StatusCode::OK);
    assert_eq!(
        call("/v1/members").await.0,
        StatusCode::FORBIDDEN,
        "only what was ticked"
    );

    // Listed with what it may do and its expiry, never with the token.
    let list = console.get("/tokens").await;
    assert!(!list.body.contains(&token));
    let (_, tokens) = server.get("/v1/management-tokens").await;
    let made = tokens["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Checkout service")
        .expect("the token is listed by the API");
    let id = made["id"].as_str().unwrap();
    let row_start = list.body.find(&format!("data-token=\"{id}\"")).unwrap();
    let row = &list.body[row_start..row_start + list.body[row_start..].find("</tr>").unwrap()];
    for shown in [
        "Checkout service",
        "manage_api_credentials, keys:verify",
        &server.owner.email,
    ] {
        assert!(row.contains(shown), "{shown} not in {row}");
    }
    let expires = time::OffsetDateTime::parse(
        made["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let days = (expires - time::OffsetDateTime::now_utc()).whole_hours() as f64 / 24.0;
    assert!((29.9..=30.0).contains(&days), "expires in {days} days");

    // Another account's token cannot be revoked from here.
    let other = server.new_tenant().await;
    let (_, theirs) = server
        .call(
            &other.token,
            reqwest::Method::GET,
            "/v1/management-tokens",
            None,
        )
        .await;
    let their_id = theirs["data"][0]["id"].as_str().unwrap();
    let page = console
        .submit("/tokens", &format!("/tokens/{their_id}/revoke"), &[])
        .await;
    assert!(flash_after(&mut console, &page).await.contains("not found"));
    let (status, _) = server
        .call(&other.token, reqwest::Method::GET, "/v1/workspaces", None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // Revoked: refused from the next request on.
    let page = console
        .submit("/tokens", &format!("/tokens/{id}/revoke"), &[])
        .await;
    assert!(flash_after(&mut console, &page).await.contains("revoked"));
    assert_eq!(call("/v1/workspaces").await.0, StatusCode::UNAUTHORIZED);
    assert!(!console.get("/tokens").await.body.contains(id));
}

async fn a_workspaces_keys_page_past_one_page(server: TestServer) {
    // The Primary ingest key and 100 more.
    let mut last_id = String::new();
    for n in 0..100 {
        let (key, _) = server
            .issue(json!({"name": format!("key {n:03}"), "environment": "production"}))
            .await;
        last_id = key["id"].as_str().unwrap().to_owned();
    }
    let mut console = signed_in_owner(&server).await;
    let rows = |page: &Page| page.body.matches("<tr data-key=").count();

    let all = console.get("/credentials").await;
    assert_eq!(rows(&all), 100);
    assert!(all.body.contains("id=\"keys-truncated\""));

    let first = console
        .get(&format!(
            "/credentials?workspace={}",
            server.owner.workspace_id
        ))
        .await;
    assert_eq!(rows(&first), 100);
    assert!(!first.body.contains("id=\"keys-truncated\""));
    assert!(!first.body.contains("← First"));
    let next = console.get(&link_to(&first.body, "Next →")).await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(rows(&next), 1);
    assert!(next.body.contains("key 099"), "the last key created");
    assert!(!next.body.contains("Next →"));
    let back = console.get(&link_to(&next.body, "← First")).await;
    assert_eq!(rows(&back), 100);

    // The workspace's own page shows the first page and says there is
    // more; an integration is offered that page's keys, and any other by
    // its id.
    let workspace_page = format!("/workspaces/{}", server.owner.workspace_id);
    let workspace = console.get(&workspace_page).await;
    assert_eq!(rows(&workspace), 100);
    assert!(!workspace.body.contains(">key 099</a>"), "not in the table");
    assert!(workspace.body.contains("id=\"keys-truncated\""));
    assert!(workspace.body.contains(&format!(
        "href=\"/credentials?workspace={}\">page through all of them",
        server.owner.workspace_id
    )));
    assert!(workspace.body.contains(">key 098 ("), "among the choices");
    assert!(!workspace.body.contains(">key 099 ("), "past the page");
    assert_eq!(workspace.body.matches("name=\"other_key_id\"").count(), 1);
    let added = console
        .submit(
            &workspace_page,
            &format!("/workspaces/{}/integrations", server.owner.workspace_id),
            &[
                ("name", "Backend"),
                ("kind", "server"),
                ("key_id", &server.owner.primary_key_id),
                ("other_key_id", &format!(" {last_id} ")),
            ],
        )
        .await;
    assert!(flash_after(&mut console, &added).await.contains("added"));
    let workspace = console.get(&workspace_page).await;
    assert!(
        workspace
            .body
            .contains(&format!("<option value=\"{last_id}\" selected>key 099 (")),
        "the key in use is offered, and chosen"
    );
    let (status, integrations) = server
        .call(
            &server.owner.token,
            reqwest::Method::GET,
            &format!("/v1/workspaces/{}/integrations", server.owner.workspace_id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(integrations["data"][0]["key_id"], json!(last_id));
    assert_eq!(
        console
            .get(&format!(
                "/credentials?workspace={}&cursor=nonsense",
                server.owner.workspace_id
            ))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    // A second ingest key past the first page still makes the Primary
    // removable.
    let primary = format!("/keys/{}", server.owner.primary_key_id);
    assert!(
        console
            .get(&primary)
            .await
            .body
            .contains("id=\"delete-disabled\"")
    );
    server
        .issue(json!({"name": "second ingest", "environment": "production", "kind": "ingest"}))
        .await;
    assert!(
        !console
            .get(&primary)
            .await
            .body
            .contains("id=\"delete-disabled\"")
    );
}

/// As GitHub's secret scanning reports it (see `secret_scanning.rs` for
/// the signed alert itself).
async fn report_found(server: &TestServer, secret: &str, location: &str) {
    let report = keyward_store::LeakReport {
        hash_hex: keyward_core::KeyHash::of(secret).to_hex(),
        reporter: "github".into(),
        location: Some(location.into()),
        found_in: Some("content".into()),
    };
    let found = server
        .store
        .report_leaked_key(&keyward_store::Actor::system(), report)
        .await
        .unwrap();
    assert!(found.is_some());
}

async fn a_leaked_key_says_where_it_was_found(server: TestServer) {
    let (revoked, revoked_secret) = server
        .issue(json!({"name": "in a public repo", "environment": "production"}))
        .await;
    let (flagged, flagged_secret) = server
        .issue(json!({"name": "last ingest", "environment": "production", "kind": "ingest"}))
        .await;
    let (status, body) = server
        .post(
            &format!("/v1/keys/{}/revoke", server.owner.primary_key_id),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = "https://github.com/octo/app/blob/1f2e/.env";
    report_found(&server, &revoked_secret, url).await;
    report_found(&server, &flagged_secret, "javascript:alert(1)").await;

    let mut console = signed_in_owner(&server).await;
    let list = console.get("/credentials").await;
    assert_eq!(
        list.body.matches(">Leaked</span>").count(),
        2,
        "{}",
        list.body
    );

    let page = console
        .get(&format!("/keys/{}", revoked["id"].as_str().unwrap()))
        .await;
    assert!(page.body.contains("Found in public"));
    assert!(
        page.body.contains(&format!("<a href=\"{url}\"")),
        "{}",
        page.body
    );
    assert!(page.body.contains("Revoked the key."));
    assert!(
        !page.body.contains("id=\"leaked\""),
        "a revoked key needs no warning"
    );

    let page = console
        .get(&format!("/keys/{}", flagged["id"].as_str().unwrap()))
        .await;
    assert!(page.body.contains("id=\"leaked\""), "{}", page.body);
    assert!(
        page.body.contains("Left working: this is the workspace"),
        "{}",
        page.body
    );
    assert!(page.body.contains("last active ingest key"));
    assert!(page.body.contains("javascript:alert(1)"), "shown");
    assert!(!page.body.contains("href=\"javascript:"), "never as a link");
}

on_both_stores!(
    sign_in_and_out,
    sign_in_attempts_are_rate_limited,
    forms_need_the_session_csrf_token,
    members_without_the_permission_see_no_credentials,
    another_accounts_objects_are_not_found,
    create_shows_the_secret_once_and_errors_readably,
    management_tokens_are_shown_once_and_revoked_at_once,
    activity_pages_show_the_latest_first,
    the_log_page_exports_what_its_filter_shows,
    whole_lists_are_shown_past_one_page,
    the_log_page_pages_through_its_filter,
    a_leaked_key_says_where_it_was_found,
    a_workspaces_keys_page_past_one_page,
    a_metered_key_shows_and_changes_its_credits,
);
