//! Upgrades keep what was stored: a database migrated up to 0007 (request
//! logs as 0002 made them), given logs, then opened by the store (which
//! applies 0008, the request-log index change, 0009, the gateway's method
//! and path, and 0013, which moves every log into a block of its own),
//! lists the same logs under the same ids, filters and purges them.

use keyward_store::testing::{Backend, TestDatabase};
use keyward_store::{NewRequestLog, PageRequest, RequestLog, RequestLogFilter};
use sqlx::AnyPool;
use sqlx::migrate::Migrator;
use std::borrow::Cow;

/// The migrations before 0008.
fn up_to_0007(mut migrator: Migrator) -> Migrator {
    migrator.migrations = Cow::Owned(
        migrator
            .migrations
            .iter()
            .filter(|m| m.version <= 7)
            .cloned()
            .collect(),
    );
    assert_eq!(migrator.migrations.len(), 7);
    migrator
}

fn old_log(n: i64) -> RequestLog {
    RequestLog {
        // Ids made before the upgrade, by the old code.
        id: format!("log_01j0000000000000000000{n:04}"),
        entry: NewRequestLog {
            account_id: format!("acct_{}", n % 2),
            at: 1_700_000_000_000 + n,
            key_id: (n % 3 != 0).then(|| format!("key_{}", n % 4)),
            workspace_id: (n % 3 != 0).then(|| "ws_1".to_owned()),
            environment: Some("production".into()),
            client_ip: (n % 5 != 0).then(|| "203.0.113.7".parse().unwrap()),
            permissions: vec!["customers:read".into(); (n % 3) as usize],
            code: "valid".into(),
            latency_us: n * 3,
            // Columns added by 0009: NULL in rows written before it.
            method: None,
            path: None,
        },
    }
}

async fn upgrade_keeps_request_logs(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    sqlx::any::install_default_drivers();
    let (url, migrator) = match backend {
        Backend::Sqlite => (
            format!("{}?mode=rwc", db.url),
            sqlx::migrate!("migrations/sqlite"),
        ),
        Backend::Postgres => (db.url.clone(), sqlx::migrate!("migrations/postgres")),
    };
    let pool = AnyPool::connect(&url).await.unwrap();
    up_to_0007(migrator).run(&pool).await.unwrap();
    let old: Vec<_> = (0..40).map(old_log).collect();
    for log in &old {
        let e = &log.entry;
        sqlx::query(
            "INSERT INTO request_logs (id, account_id, at, key_id, workspace_id, environment, \
             client_ip, permissions, code, latency_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&log.id)
        .bind(&e.account_id)
        .bind(e.at)
        .bind(e.key_id.as_deref())
        .bind(e.workspace_id.as_deref())
        .bind(e.environment.as_deref())
        .bind(e.client_ip.map(|ip| ip.to_string()))
        .bind(serde_json::to_string(&e.permissions).unwrap())
        .bind(&e.code)
        .bind(e.latency_us)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let store = db.open_store().await;
    let new = NewRequestLog {
        at: 1_800_000_000_000,
        method: Some("GET".into()),
        path: Some("/orders/1".into()),
        ..old_log(1).entry
    };
    store
        .insert_request_logs(&std::iter::once(&new).collect())
        .await
        .unwrap();
    let listed = |filter: RequestLogFilter| {
        let store = store.clone();
        async move {
            let page = PageRequest {
                limit: 100,
                after: None,
            };
            let listed = store.list_request_logs("acct_1", &filter, &page).await;
            listed.unwrap().items
        }
    };
    let all = listed(RequestLogFilter::default()).await;
    assert_eq!(all.len(), 21);
    assert_eq!(all[0].entry, new);
    assert!(all[0].id.starts_with("log_"));
    let expected: Vec<_> = old
        .iter()
        .rev()
        .filter(|log| log.entry.account_id == "acct_1")
        .cloned()
        .collect();
    assert_eq!(all[1..], expected[..]);
    let by_key = RequestLogFilter {
        key_id: Some("key_1".into()),
        ..RequestLogFilter::default()
    };
    assert_eq!(
        listed(by_key).await.len(),
        1 + expected
            .iter()
            .filter(|l| l.entry.key_id.as_deref() == Some("key_1"))
            .count()
    );
    // Moved logs may hold any code: a search by code decodes them.
    let by_code = RequestLogFilter {
        code: Some("valid".into()),
        ..RequestLogFilter::default()
    };
    assert_eq!(listed(by_code).await, all);
    assert_eq!(
        store.purge_request_logs(1_700_000_000_020).await.unwrap(),
        20
    );
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgrade_keeps_request_logs() {
    upgrade_keeps_request_logs(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_upgrade_keeps_request_logs() {
    upgrade_keeps_request_logs(Backend::Postgres).await
}
