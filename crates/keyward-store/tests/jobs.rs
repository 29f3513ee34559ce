//! The job queue and the expiry sweep, on both backends.

use keyward_core::{KeyKind, KeyStatus};
use keyward_store::testing::{Backend, TestDatabase};
use keyward_store::{Actor, JobOutcome, JobStatus, NewAccount, NewJob, NewKey, Store};
use std::sync::Arc;

struct Fixture {
    store: Arc<dyn Store>,
    account: String,
    workspace: String,
    _db: TestDatabase,
}

async fn fixture(backend: Backend) -> Option<Fixture> {
    let db = TestDatabase::create_or_skip(backend).await?;
    let store = db.open_store().await;
    let made = store
        .bootstrap_account(NewAccount {
            name: "Acme".into(),
            owner_email: "owner@acme.example".into(),
            owner_password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into(),
            workspace_name: "Default".into(),
            environments: vec![("production".into(), "live".into())],
            token_name: "t".into(),
            token_hash_hex: "0".repeat(64),
            token_hint: "kw_mgmt_…".into(),
            primary_key: None,
        })
        .await
        .unwrap();
    Some(Fixture {
        account: made.account.id,
        workspace: made.workspace.workspace.id,
        store,
        _db: db,
    })
}

fn key(workspace: &str, name: &str, hash: char, expires_at: Option<i64>) -> NewKey {
    NewKey {
        workspace_id: workspace.into(),
        environment: "production".into(),
        kind: KeyKind::Secret,
        name: name.into(),
        hash_hex: hash.to_string().repeat(64),
        hint: "kw_live_…".into(),
        permissions: vec![],
        customer_id: None,
        rate_limit: None,
        allowed_ips: vec![],
        expires_at,
        meta: serde_json::Map::new(),
        created_by: None,
        allowed_origins: vec![],
        public_value: None,
    }
}

fn job(kind: &str) -> NewJob {
    NewJob {
        kind: kind.into(),
        params: serde_json::Map::new(),
        created_by: None,
    }
}

async fn the_sweep_marks_only_keys_past_their_expiry(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let s = &f.store;
    let actor = Actor::system();
    let past = s
        .create_key(&f.account, &actor, key(&f.workspace, "past", 'a', Some(1)))
        .await
        .unwrap();
    let future = s
        .create_key(
            &f.account,
            &actor,
            key(&f.workspace, "future", 'b', Some(i64::MAX / 2)),
        )
        .await
        .unwrap();
    let forever = s
        .create_key(&f.account, &actor, key(&f.workspace, "forever", 'c', None))
        .await
        .unwrap();
    assert_eq!(s.expire_due_keys(100).await.unwrap(), 1);
    assert_eq!(s.expire_due_keys(100).await.unwrap(), 0, "already marked");
    let status = |id: String| {
        let (s, account) = (s.clone(), f.account.clone());
        async move { s.get_key(&account, &id).await.unwrap().status }
    };
    assert_eq!(status(past.id).await, KeyStatus::Expired);
    assert_eq!(status(future.id).await, KeyStatus::Active);
    assert_eq!(status(forever.id).await, KeyStatus::Active);
}

async fn jobs_are_claimed_once_and_recovered_when_stale(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let s = &f.store;
    let first = s
        .enqueue_job(Some(&f.account), &Actor::system(), job("disable_keys"))
        .await
        .unwrap();
    let second = s
        .enqueue_job(None, &Actor::system(), job("expire_keys"))
        .await
        .unwrap();
    assert_eq!(first.status, JobStatus::Queued);
    assert!(s.job_pending("expire_keys").await.unwrap());

    let claimed = s.claim_job().await.unwrap().unwrap();
    assert_eq!(
        (claimed.id.as_str(), claimed.status, claimed.attempts),
        (first.id.as_str(), JobStatus::Running, 1)
    );
    let next = s.claim_job().await.unwrap().unwrap();
    assert_eq!(next.id, second.id, "a claimed job is not handed out twice");
    assert!(s.claim_job().await.unwrap().is_none());

    s.report_job_progress(&first.id, 5, Some(10)).await.unwrap();
    let shown = s.get_job(&f.account, &first.id).await.unwrap();
    assert_eq!((shown.progress_done, shown.progress_total), (5, Some(10)));
    assert!(
        s.get_job(&f.account, &second.id).await.is_err(),
        "system jobs are no account's"
    );

    // Nothing is stale yet; then the worker of `first` "dies".
    assert_eq!(s.recover_stale_jobs(0).await.unwrap(), 0);
    assert_eq!(s.recover_stale_jobs(i64::MAX).await.unwrap(), 2);
    let requeued = s.get_job(&f.account, &first.id).await.unwrap();
    assert_eq!(requeued.status, JobStatus::Queued);

    // After three attempts an interrupted job is failed, not retried forever.
    for _ in 0..2 {
        while s.claim_job().await.unwrap().is_some() {}
        s.recover_stale_jobs(i64::MAX).await.unwrap();
    }
    let failed = s.get_job(&f.account, &first.id).await.unwrap();
    assert_eq!((failed.status, failed.attempts), (JobStatus::Failed, 3));
    assert!(failed.error.unwrap().contains("interrupted"));

    let done = s
        .enqueue_job(Some(&f.account), &Actor::system(), job("disable_keys"))
        .await
        .unwrap();
    s.claim_job().await.unwrap().unwrap();
    let result = serde_json::json!({"changed": 4})
        .as_object()
        .cloned()
        .unwrap();
    s.finish_job(&done.id, JobOutcome::Succeeded(result.clone()))
        .await
        .unwrap();
    let done = s.get_job(&f.account, &done.id).await.unwrap();
    assert_eq!(
        (done.status, done.result),
        (JobStatus::Succeeded, Some(result))
    );
    assert!(!s.job_pending("disable_keys").await.unwrap());
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test] async fn $name() { super::$name(keyward_store::testing::Backend::Sqlite).await } )* }
        mod postgres { $( #[tokio::test] async fn $name() { super::$name(keyward_store::testing::Backend::Postgres).await } )* }
    };
}

on_both_backends!(
    the_sweep_marks_only_keys_past_their_expiry,
    jobs_are_claimed_once_and_recovered_when_stale
);
