//! The job queue, the expiry sweep and bulk rotation's store side, on both
//! backends.

use keyward_core::{KeyKind, KeyStatus};
use keyward_store::testing::{Backend, TestDatabase};
use keyward_store::{
    Actor, AuditFilter, JobKeyReplacement, JobOutcome, JobRotation, JobStatus, KeyReplacement,
    ListOrder, NewAccount, NewJob, NewKey, PageRequest, Store, StoreError,
};
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
        credits: None,
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

    // The account's jobs (never the system's), either way round, a page
    // of one at a time so that every cursor is followed.
    assert_eq!(
        job_ids(s, &f.account, ListOrder::OldestFirst).await,
        [first.id.clone(), done.id.clone()]
    );
    assert_eq!(
        job_ids(s, &f.account, ListOrder::NewestFirst).await,
        [done.id, first.id]
    );
}

async fn job_ids(s: &Arc<dyn Store>, account: &str, order: ListOrder) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = PageRequest { limit: 1, after };
        let page = s.list_jobs(account, order, &page).await.unwrap();
        ids.extend(page.items.into_iter().map(|job| job.id));
        match page.next_after {
            Some(next) => after = Some(next),
            None => return ids,
        }
    }
}

/// A bulk rotation of one key as the worker hands it over: the new secret
/// is `hash` repeated, sealed as `sealed`.
fn sealed_rotation(job_id: &str, key_id: &str, hash: char, sealed: &str) -> JobKeyReplacement {
    JobKeyReplacement {
        job_id: job_id.into(),
        replacement: KeyReplacement {
            key_id: key_id.into(),
            hash_hex: hash.to_string().repeat(64),
            hint: format!("kw_live_{hash}…"),
            public_value: None,
            grace_ms: 3_600_000,
        },
        ciphertext: sealed.into(),
    }
}

/// Which key a presented secret (its hash `hash` repeated) finds.
async fn found_by(s: &Arc<dyn Store>, hash: char) -> Option<String> {
    s.find_key_for_verification(&hash.to_string().repeat(64))
        .await
        .unwrap()
        .map(|record| record.key.id)
}

async fn a_resumed_rotation_job_never_rotates_a_key_twice(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let s = &f.store;
    let actor = Actor::system();
    let key = s
        .create_key(&f.account, &actor, key(&f.workspace, "server", 'a', None))
        .await
        .unwrap();
    let first_job = s
        .enqueue_job(Some(&f.account), &actor, job("rotate_keys"))
        .await
        .unwrap();
    s.claim_job().await.unwrap().unwrap();

    let first = s
        .rotate_key_for_job(
            &f.account,
            &actor,
            sealed_rotation(&first_job.id, &key.id, 'b', "sealed b"),
        )
        .await
        .unwrap();
    let JobRotation::Rotated(recorded) = &first else {
        panic!("the first rotation of the key rotates it: {first:?}");
    };
    assert_eq!(
        (
            recorded.key_name.as_str(),
            recorded.hint.as_str(),
            recorded.ciphertext.as_str()
        ),
        ("server", "kw_live_b…", "sealed b")
    );

    // The worker dies after that commit; the job is recovered and resumed,
    // and its next attempt offers the same key with another new secret.
    assert_eq!(s.recover_stale_jobs(i64::MAX).await.unwrap(), 1);
    let resumed = s.claim_job().await.unwrap().unwrap();
    assert_eq!(
        (resumed.id.as_str(), resumed.attempts),
        (first_job.id.as_str(), 2)
    );
    let again = s
        .rotate_key_for_job(
            &f.account,
            &actor,
            sealed_rotation(&first_job.id, &key.id, 'c', "sealed c"),
        )
        .await
        .unwrap();
    assert_eq!(again, JobRotation::AlreadyRotated(recorded.clone()));

    // Rotated once: the original secret still verifies (its grace period
    // runs), the first new one verifies, the second was never installed.
    assert_eq!(found_by(s, 'a').await.as_deref(), Some(key.id.as_str()));
    assert_eq!(found_by(s, 'b').await.as_deref(), Some(key.id.as_str()));
    assert_eq!(found_by(s, 'c').await, None);
    let now = s.get_key(&f.account, &key.id).await.unwrap();
    assert_eq!(now.hint, "kw_live_b…");
    assert_eq!(
        now.rotation.unwrap().expires_at,
        recorded.old_secret_expires_at
    );

    let page = PageRequest {
        limit: 10,
        after: None,
    };
    let secrets = s
        .list_job_secrets(&f.account, &first_job.id, &page)
        .await
        .unwrap();
    assert_eq!(secrets.items, vec![recorded.clone()]);
    let filter = AuditFilter {
        action: Some("key.rotated".into()),
        object_id: Some(key.id.clone()),
        ..AuditFilter::default()
    };
    let events = s
        .list_audit_events(&f.account, &filter, ListOrder::OldestFirst, &page)
        .await
        .unwrap();
    assert_eq!(events.items.len(), 1, "one rotation, one event");
    assert_eq!(
        events.items[0].after.as_ref().unwrap()["job_id"],
        first_job.id.as_str()
    );

    // Another job is another decision: it rotates the key again.
    let next = s
        .enqueue_job(Some(&f.account), &actor, job("rotate_keys"))
        .await
        .unwrap();
    let later = s
        .rotate_key_for_job(
            &f.account,
            &actor,
            sealed_rotation(&next.id, &key.id, 'd', "sealed d"),
        )
        .await
        .unwrap();
    assert!(matches!(later, JobRotation::Rotated(_)), "{later:?}");
    assert_eq!(
        found_by(s, 'a').await,
        None,
        "a second rotation forgets the first secret"
    );
}

async fn a_rotation_job_skips_revoked_and_expired_keys(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let s = &f.store;
    let actor = Actor::system();
    let revoked = s
        .create_key(&f.account, &actor, key(&f.workspace, "revoked", 'a', None))
        .await
        .unwrap();
    s.revoke_key(&f.account, &actor, &revoked.id, false)
        .await
        .unwrap();
    let lapsed = s
        .create_key(
            &f.account,
            &actor,
            key(&f.workspace, "lapsed", 'b', Some(1)),
        )
        .await
        .unwrap();
    let disabled = s
        .create_key(&f.account, &actor, key(&f.workspace, "disabled", 'c', None))
        .await
        .unwrap();
    s.set_key_status(&f.account, &actor, &disabled.id, KeyStatus::Inactive)
        .await
        .unwrap();
    let job = s
        .enqueue_job(Some(&f.account), &actor, job("rotate_keys"))
        .await
        .unwrap();

    for (id, word) in [(&revoked.id, "revoked"), (&lapsed.id, "expired")] {
        match s
            .rotate_key_for_job(&f.account, &actor, sealed_rotation(&job.id, id, 'd', "x"))
            .await
        {
            Err(StoreError::Conflict { field, message }) => {
                assert_eq!(field, "status");
                assert!(message.contains(word), "{message}");
            }
            other => panic!("a {word} key is not rotated: {other:?}"),
        }
    }
    assert_eq!(found_by(s, 'd').await, None);
    let rotated = s
        .rotate_key_for_job(
            &f.account,
            &actor,
            sealed_rotation(&job.id, &disabled.id, 'e', "x"),
        )
        .await
        .unwrap();
    assert!(
        matches!(rotated, JobRotation::Rotated(_)),
        "inactive keys are rotated"
    );
    assert_eq!(
        s.get_key(&f.account, &disabled.id).await.unwrap().status,
        KeyStatus::Inactive,
        "and stay inactive"
    );

    // Jobs and keys are the account's: a job id it does not own is unknown.
    let unknown_job = s
        .rotate_key_for_job(
            &f.account,
            &actor,
            sealed_rotation("job_nope", &disabled.id, 'f', "x"),
        )
        .await;
    assert!(
        matches!(unknown_job, Err(StoreError::NotFound { what: "job", .. })),
        "{unknown_job:?}"
    );
    let unknown_key = s
        .rotate_key_for_job(
            &f.account,
            &actor,
            sealed_rotation(&job.id, "key_nope", 'f', "x"),
        )
        .await;
    assert!(
        matches!(unknown_key, Err(StoreError::NotFound { what: "key", .. })),
        "{unknown_key:?}"
    );
    let page = PageRequest {
        limit: 10,
        after: None,
    };
    assert!(matches!(
        s.list_job_secrets("acct_nope", &job.id, &page).await,
        Err(StoreError::NotFound { what: "job", .. })
    ));
}

async fn an_export_is_stored_in_parts_for_its_account_only(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let s = &f.store;
    let export = s
        .enqueue_job(Some(&f.account), &Actor::system(), job("export_logs"))
        .await
        .unwrap();
    // Every byte value, and an empty part: stored and read back exactly.
    let first: Vec<u8> = (0..=255).cycle().take(70_000).collect();
    s.add_job_export_part(&f.account, &export.id, 0, &first)
        .await
        .unwrap();
    s.add_job_export_part(&f.account, &export.id, 1, &[])
        .await
        .unwrap();
    let read = |part: u32, account: String| {
        let (s, id) = (s.clone(), export.id.clone());
        async move { s.job_export_part(&account, &id, part).await.unwrap() }
    };
    assert_eq!(read(0, f.account.clone()).await, Some(first.clone()));
    assert_eq!(read(1, f.account.clone()).await, Some(vec![]));
    assert_eq!(read(2, f.account.clone()).await, None, "past the last part");
    assert_eq!(read(0, "acc_other".into()).await, None, "another account's");
    assert!(
        s.add_job_export_part(&f.account, &export.id, 1, b"again")
            .await
            .is_err(),
        "a part is written once"
    );

    // Opening it for a download is audited; another account opens nothing
    // and leaves no event.
    let downloads = |account: String| {
        let s = s.clone();
        async move {
            let filter = AuditFilter {
                action: Some("job.export_downloaded".into()),
                ..AuditFilter::default()
            };
            let page = PageRequest::default();
            s.list_audit_events(&account, &filter, ListOrder::OldestFirst, &page)
                .await
                .unwrap()
                .items
        }
    };
    let actor = Actor {
        member_id: Some("mem_reader".into()),
        ..Actor::system()
    };
    let opened = s.open_job_export(&f.account, &actor, &export.id).await;
    assert_eq!(opened.unwrap(), Some(first.clone()));
    let events = downloads(f.account.clone()).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].object_id.as_str(), &events[0].actor),
        (export.id.as_str(), &actor)
    );
    let theirs = s.open_job_export("acc_other", &actor, &export.id).await;
    assert_eq!(theirs.unwrap(), None);
    assert!(downloads("acc_other".into()).await.is_empty());

    // Another account cannot clear it; the job itself starts over.
    s.clear_job_export("acc_other", &export.id).await.unwrap();
    assert_eq!(read(0, f.account.clone()).await, Some(first));
    s.clear_job_export(&f.account, &export.id).await.unwrap();
    assert_eq!(read(0, f.account.clone()).await, None);

    // The purge takes parts written before its moment, not after.
    s.add_job_export_part(&f.account, &export.id, 0, b"part")
        .await
        .unwrap();
    assert_eq!(s.purge_job_exports(0).await.unwrap(), 0);
    assert_eq!(s.purge_job_exports(i64::MAX).await.unwrap(), 1);
    assert_eq!(read(0, f.account.clone()).await, None);
    let gone = s.open_job_export(&f.account, &actor, &export.id).await;
    assert_eq!(gone.unwrap(), None);
    assert_eq!(
        downloads(f.account.clone()).await.len(),
        1,
        "no event without a file"
    );
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test] async fn $name() { super::$name(keyward_store::testing::Backend::Sqlite).await } )* }
        mod postgres { $( #[tokio::test] async fn $name() { super::$name(keyward_store::testing::Backend::Postgres).await } )* }
    };
}

on_both_backends!(
    the_sweep_marks_only_keys_past_their_expiry,
    jobs_are_claimed_once_and_recovered_when_stale,
    a_resumed_rotation_job_never_rotates_a_key_twice,
    a_rotation_job_skips_revoked_and_expired_keys,
    an_export_is_stored_in_parts_for_its_account_only,
);
