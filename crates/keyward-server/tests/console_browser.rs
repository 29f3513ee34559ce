//! The console driven in headless Chromium (Debian's `chromium` and
//! `chromedriver`, installed by `.ci/run`) through the real server: the
//! flows of seeds 000, 001, 003 and 004, from sign-in to a key refused
//! from an address outside the allowlist.
//!
//! Without Chromium the test is skipped locally and fails under `CI=true`.
//! With `KEYWARD_SCREENSHOTS=<dir>` it saves the screenshots the README
//! shows.

mod common;

use common::{OWNER_PASSWORD, TestServer};
use fantoccini::{Client, ClientBuilder, Locator};
use keyward_store::testing::Backend;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The launch flags DEVELOPERS.md documents: no sandbox (CI runs as root),
/// and nothing that reaches for the network this machine doesn't have.
const FLAGS: [&str; 7] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// A chromedriver with one Chromium session; both end when it drops.
struct Browser {
    client: Client,
    driver: Child,
    profile: tempfile::TempDir,
}

impl Browser {
    async fn launch() -> Option<Self> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{CHROMIUM} and {CHROMEDRIVER} are required in CI (.ci/run installs them)"
            );
            eprintln!("skipping: Chromium or chromedriver is not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push("--window-size=1280,900".into());
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({"goog:chromeOptions": {"binary": CHROMIUM, "args": args}});
        let capabilities = capabilities.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let client = common::eventually(Duration::from_secs(20), || {
            let (url, capabilities) = (url.clone(), capabilities.clone());
            async move {
                ClientBuilder::native()
                    .capabilities(capabilities)
                    .connect(&url)
                    .await
                    .ok()
            }
        })
        .await;
        Some(Self {
            client,
            driver,
            profile,
        })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that panicked never closed its session: end Chromium (found
        // by its profile directory) and the driver, so nothing outlives it.
        let marker = self.profile.path().display().to_string();
        if let Ok(processes) = std::fs::read_dir("/proc") {
            for process in processes.flatten() {
                let cmdline = std::fs::read(process.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&marker) {
                    let pid = process.file_name().to_string_lossy().into_owned();
                    let _ = Command::new("kill").arg("-9").arg(pid).status();
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One step of a flow in the browser, with what the test needs around it.
struct Session<'a> {
    browser: &'a Client,
    server: &'a TestServer,
    screenshots: Option<std::path::PathBuf>,
}

impl Session<'_> {
    async fn open(&self, path: &str) {
        self.browser
            .goto(&format!("{}{path}", self.server.base))
            .await
            .expect("navigate");
    }

    async fn path(&self) -> String {
        let url = self.browser.current_url().await.unwrap();
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.browser.find(Locator::Css(css)).await.expect(css);
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.browser
            .find(Locator::Css(css))
            .await
            .expect(css)
            .click()
            .await
            .unwrap();
    }

    async fn choose(&self, css: &str, value: &str) {
        self.browser
            .find(Locator::Css(css))
            .await
            .expect(css)
            .select_by_value(value)
            .await
            .unwrap();
    }

    async fn text(&self, css: &str) -> String {
        self.browser
            .find(Locator::Css(css))
            .await
            .expect(css)
            .text()
            .await
            .unwrap()
    }

    async fn page_text(&self) -> String {
        self.text("body").await
    }

    /// Clicks a button that loads another page, and waits until that page
    /// has loaded (the old document's root goes stale first).
    async fn submit(&self, css: &str) {
        self.submit_answering(css, None).await;
    }

    /// Like [`Self::submit`], for a button whose form asks first
    /// (`data-confirm`): checks the question and accepts it.
    async fn submit_confirming(&self, css: &str, question: &str) {
        self.submit_answering(css, Some(question)).await;
    }

    async fn submit_answering(&self, css: &str, question: Option<&str>) {
        let old = self.browser.find(Locator::Css("html")).await.unwrap();
        self.click(css).await;
        if let Some(question) = question {
            let asked = self.browser.get_alert_text().await.expect("a confirmation");
            assert!(asked.contains(question), "{asked}");
            self.browser.accept_alert().await.unwrap();
        }
        common::eventually(Duration::from_secs(15), || async {
            old.tag_name().await.is_err().then_some(())
        })
        .await;
        common::eventually(Duration::from_secs(15), || async {
            let state = self
                .browser
                .execute("return document.readyState;", vec![])
                .await
                .ok()?;
            (state == "complete").then_some(())
        })
        .await;
    }

    async fn screenshot(&self, name: &str) {
        if let Some(dir) = &self.screenshots {
            let png = self.browser.screenshot().await.unwrap();
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }

    /// Reads the one-time secret dialog, then closes it.
    async fn read_secret_dialog(&self) -> (String, Option<String>) {
        let dialog = self.text("#secret-dialog").await;
        assert!(dialog.contains("will not be shown again"), "{dialog}");
        let secret = self.text("[data-testid=secret]").await;
        let site_id = match self
            .browser
            .find(Locator::Css("[data-testid=site-id]"))
            .await
        {
            Ok(element) => Some(element.text().await.unwrap()),
            Err(_) => None,
        };
        (secret, site_id)
    }

    async fn verify(&self, body: Value) -> String {
        self.server.code(body).await
    }

    /// Whether the page fits the window's width (no sideways scrolling).
    async fn fits_width(&self) -> bool {
        self.browser
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
                vec![],
            )
            .await
            .unwrap()
            .as_bool()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_flows_in_chromium() {
    let Some(server) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let s = Session {
        browser: &browser.client,
        server: &server,
        screenshots: std::env::var_os("KEYWARD_SCREENSHOTS").map(Into::into),
    };

    // Sign in: any page sends you there, and back afterwards.
    s.open("/credentials").await;
    assert!(s.path().await.starts_with("/sign-in"));
    s.screenshot("sign-in").await;
    s.fill("input[name=email]", &server.owner.email).await;
    s.fill("input[name=password]", "not my password").await;
    s.submit("button[type=submit]").await;
    assert!(s.page_text().await.contains("do not match an account"));
    s.fill("input[name=password]", OWNER_PASSWORD).await;
    s.submit("button[type=submit]").await;
    assert_eq!(s.path().await, "/credentials", "{}", s.page_text().await);

    // The permissions keys can hold come from the account's catalog.
    s.open("/permissions").await;
    s.fill("#new-permission input[name=name]", "customers:read")
        .await;
    s.fill("#new-permission input[name=description]", "Read customers")
        .await;
    s.submit("#new-permission button[type=submit]").await;
    assert!(s.text("#permissions").await.contains("customers:read"));

    // A new workspace comes with primary credentials, shown once (seed 000).
    s.open("/workspaces").await;
    s.fill("#new-workspace input[name=name]", "Marketing site")
        .await;
    s.submit("#new-workspace button[type=submit]").await;
    let (primary_secret, site_id) = s.read_secret_dialog().await;
    let site_id = site_id.expect("ingest credentials show their Site ID");
    let basic = format!("{site_id}:{primary_secret}");
    let authorization = format!("Basic {}", base64_engine().encode(basic.as_bytes()));
    assert_eq!(
        s.verify(json!({"authorization": authorization})).await,
        "valid"
    );
    s.submit("#secret-done").await;
    let workspace_id = s.text(".mono").await; // the key page's Site ID row
    assert_eq!(workspace_id, site_id);
    let (_, key) = server.get(&format!("/v1/keys/{site_id}")).await;
    let workspace = key["workspace_id"].as_str().unwrap().to_owned();

    // Create a key (seed 004): name, environment, permissions, rate limit.
    s.open(&format!("/credentials/new?workspace={workspace}"))
        .await;
    s.fill("#new-key input[name=name]", "Main Website Integration")
        .await;
    s.choose("#new-key select[name=environment]", "production")
        .await;
    s.click("#new-key input[value='customers:read']").await;
    s.fill("#new-key input[name=rate_limit]", "100").await;
    s.fill("#new-key input[name=rate_window]", "60").await;
    s.screenshot("create-key").await;
    s.submit("#new-key button[type=submit]").await;
    s.screenshot("secret-dialog").await;
    let (first_secret, _) = s.read_secret_dialog().await;
    let demand = |secret: &str| json!({"key": secret, "permissions": ["customers:read"], "environment": "production"});
    assert_eq!(s.verify(demand(&first_secret)).await, "valid");
    assert_eq!(
        s.verify(json!({"key": first_secret, "environment": "staging"}))
            .await,
        "wrong_environment"
    );
    s.submit("#secret-done").await;
    let key_path = s.path().await;
    assert!(key_path.starts_with("/keys/"), "{key_path}");
    let key_id = key_path.trim_start_matches("/keys/").to_owned();

    // The list shows it with its permissions, limit and last use.
    s.open(&format!("/credentials?workspace={workspace}")).await;
    let row = s.text(&format!("tr[data-key='{key_id}']")).await;
    for shown in [
        "Main Website Integration",
        "production",
        "customers:read",
        "100 / 60 s",
        "Active",
    ] {
        assert!(row.contains(shown), "{shown} not in {row}");
    }
    s.screenshot("credentials").await;

    // Rotate with a grace period (seed 003): both secrets work meanwhile.
    s.open(&key_path).await;
    s.choose("#rotate select[name=grace_seconds]", "3600").await;
    s.submit("#rotate button[type=submit]").await;
    let (second_secret, _) = s.read_secret_dialog().await;
    assert_ne!(second_secret, first_secret);
    assert!(s.page_text().await.contains("keeps working until"));
    assert_eq!(s.verify(demand(&second_secret)).await, "valid");
    assert_eq!(s.verify(demand(&first_secret)).await, "valid");
    s.submit("#secret-done").await;
    assert_eq!(s.text("#key-status").await, "Rotating");
    assert!(s.text("#rotation").await.contains("last used"));
    s.screenshot("key").await;

    // Disable: refused at once; enable again.
    s.submit("#disable button[type=submit]").await;
    assert_eq!(s.text("#key-status").await, "Inactive");
    assert!(s.text(".flash.ok").await.contains("disabled"));
    assert_eq!(s.verify(demand(&second_secret)).await, "key_inactive");
    s.submit("#enable button[type=submit]").await;
    assert_eq!(s.verify(demand(&second_secret)).await, "valid");

    // 429s: the limit is raised in the key's settings (seed 004), at once.
    s.fill("#settings input[name=rate_limit]", "1").await;
    s.submit("#settings button[type=submit]").await;
    assert!(s.text(".flash.ok").await.contains("Settings"));
    assert_eq!(s.verify(demand(&second_secret)).await, "valid");
    assert_eq!(s.verify(demand(&second_secret)).await, "rate_limited");
    s.fill("#settings input[name=rate_limit]", "1000").await;
    s.submit("#settings button[type=submit]").await;
    assert_eq!(s.verify(demand(&second_secret)).await, "valid");
    let row = s.text("dl.facts").await;
    assert!(
        row.contains("1000 / 60 s") && row.contains("customers:read"),
        "{row}"
    );

    // Usage credits: metered from the key's page with a daily refill, topped
    // up, then unmetered — a button that needs no balance typed.
    s.fill("#metering input[name=amount]", "1").await;
    s.choose("#metering select[name=refill]", "daily").await;
    s.submit("#metering button[value=meter]").await;
    let flash = s.text(".flash.ok").await;
    assert!(flash.contains("1 left, set back to 1 every day"), "{flash}");
    assert_eq!(s.verify(demand(&second_secret)).await, "valid");
    assert_eq!(s.verify(demand(&second_secret)).await, "rate_limited");
    s.fill("#change-credits input[name=amount]", "2").await;
    s.submit("#change-credits button[type=submit]").await;
    assert!(s.text(".flash.ok").await.contains("2 left"));
    assert_eq!(s.verify(demand(&second_secret)).await, "valid");
    s.submit("#metering button[value=unlimited]").await;
    assert!(s.text(".flash.ok").await.contains("No longer metered"));
    assert_eq!(s.text("#credits").await, "Unlimited");
    for _ in 0..3 {
        assert_eq!(s.verify(demand(&second_secret)).await, "valid");
    }

    // IP allowlist (seed 001): once the workspace has an entry, other
    // addresses are refused even with a valid key.
    s.open("/credentials").await;
    s.fill("#add-address input[name=address]", "203.0.113.0/24")
        .await;
    s.fill("#add-address input[name=description]", "Office")
        .await;
    s.click(&format!("#add-address input[value='{workspace}']"))
        .await;
    s.submit("#add-address button[type=submit]").await;
    assert!(s.text(".flash.ok").await.contains("203.0.113.0/24"));
    let from =
        |ip: &str| json!({"key": second_secret, "permissions": ["customers:read"], "ip": ip});
    assert_eq!(s.verify(from("203.0.113.9")).await, "valid");
    assert_eq!(s.verify(from("198.51.100.1")).await, "ip_not_allowed");

    // Request logs show those outcomes, filterable by outcome.
    s.open(&format!("/logs?key_id={key_id}&outcome=ip_not_allowed"))
        .await;
    let logs = common::eventually(Duration::from_secs(10), || async {
        s.open(&format!("/logs?key_id={key_id}&outcome=ip_not_allowed"))
            .await;
        let text = s.text("#logs").await;
        text.contains("198.51.100.1").then_some(text)
    })
    .await;
    assert!(!logs.contains("valid "), "filtered to one outcome: {logs}");
    s.screenshot("request-logs").await;

    // Delete asks for the name again (seeds 000, 001).
    s.open(&key_path).await;
    s.fill("#delete input[name=confirm_name]", "Main Website")
        .await;
    s.submit("#delete button[type=submit]").await;
    assert!(s.text(".flash.error").await.contains("name"));
    s.fill(
        "#delete input[name=confirm_name]",
        "Main Website Integration",
    )
    .await;
    s.submit("#delete button[type=submit]").await;
    assert_eq!(s.path().await, "/credentials");
    assert_eq!(s.verify(demand(&second_secret)).await, "unknown_key");

    // The workspace's last ingest credentials cannot be deleted: the
    // button is disabled with the reason, and the server refuses anyway.
    s.open(&format!("/keys/{site_id}")).await;
    assert!(
        s.text("#delete-disabled")
            .await
            .contains("Create a new set")
    );
    let button = s
        .browser
        .find(Locator::Css("#delete button[type=submit]"))
        .await
        .unwrap();
    assert!(!button.is_enabled().await.unwrap());
    let (status, refused) = server
        .call(
            &server.owner.token,
            reqwest::Method::DELETE,
            &format!("/v1/keys/{site_id}"),
            Some(json!({"confirm_name": "Primary"})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "{refused}");

    // Integrations (seed 000): choose the credentials Segment uses.
    s.open(&format!("/workspaces/{workspace}")).await;
    s.fill("#new-integration input[name=name]", "Segment").await;
    s.choose("#new-integration select[name=kind]", "segment")
        .await;
    s.choose("#new-integration select[name=key_id]", &site_id)
        .await;
    s.submit("#new-integration button[type=submit]").await;
    assert!(s.text(".flash.ok").await.contains("Segment"));
    s.screenshot("integrations").await;

    // The audit log recorded it all, naming the signed-in member.
    s.open("/audit").await;
    let audit = s.text("#audit").await;
    for action in [
        "key.created",
        "key.rotated",
        "key.deleted",
        "session.created",
        "integration.created",
    ] {
        assert!(audit.contains(action), "{action} not in the audit log");
    }

    // A management token for the platform's backend (SPEC §1): verify
    // only by default, shown once, working at once, revoked at once.
    s.open("/tokens").await;
    s.fill("#new-token input[name=name]", "Checkout service")
        .await;
    s.choose("#new-token select[name=lifetime]", "30").await;
    s.submit("#new-token button[type=submit]").await;
    let (token, _) = s.read_secret_dialog().await;
    let verify_body = json!({"authorization": authorization});
    let verify_with = |token: String| {
        let (server, body) = (&server, verify_body.clone());
        async move {
            let (status, _) = server
                .call(&token, reqwest::Method::POST, "/v1/verify", Some(body))
                .await;
            status
        }
    };
    assert_eq!(verify_with(token.clone()).await, reqwest::StatusCode::OK);
    let (status, _) = server
        .call(&token, reqwest::Method::GET, "/v1/workspaces", None)
        .await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN, "verify only");
    s.submit("#secret-done").await;
    assert!(s.text("#tokens").await.contains("Checkout service"));
    s.screenshot("tokens").await;
    s.submit_confirming(
        "#tokens tr[data-name='Checkout service'] button.danger",
        "Revoke Checkout service",
    )
    .await;
    assert!(s.text(".flash.ok").await.contains("revoked"));
    assert_eq!(verify_with(token).await, reqwest::StatusCode::UNAUTHORIZED);

    // At a phone's width the pages fit (tables scroll inside their box).
    s.browser.set_window_size(390, 844).await.unwrap();
    for path in [
        "/credentials",
        &format!("/keys/{site_id}"),
        "/members",
        "/tokens",
    ] {
        s.open(path).await;
        assert!(s.fits_width().await, "{path} is wider than a phone");
    }
    s.screenshot("phone").await;

    // Sign out: back to the sign-in page, and pages need a session again.
    s.submit(".signout button").await;
    assert_eq!(s.path().await, "/sign-in");
    s.open("/credentials").await;
    assert!(s.path().await.starts_with("/sign-in"));
    browser.client.clone().close().await.unwrap();
}

fn base64_engine() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

use base64::Engine as _;
