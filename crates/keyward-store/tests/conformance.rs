//! The store's contract, checked against every backend: each suite function
//! takes a [`Backend`], and `conformance_suite!` at the bottom turns it into
//! one test per backend (`sqlite::name`, `postgres::name`).

use ipnet::IpNet;
use keyward_core::{
    AccountPermission, CreditRefill, DEFAULT_ENVIRONMENTS, KeyKind, KeyStatus, PermissionName,
    RateLimitPolicy, RefillInterval, Role,
};
use keyward_store::testing::{Backend, TestDatabase};
use keyward_store::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;

// ── Fixtures ─────────────────────────────────────────────────────────────

/// A store on a database of its own. Fields drop in order: the store (and
/// its pool) before the database it uses.
struct Fixture {
    store: Arc<dyn Store>,
    db: TestDatabase,
}

impl Fixture {
    /// `None` only when PostgreSQL is unreachable and skipping is allowed.
    async fn new(backend: Backend) -> Option<Fixture> {
        let db = TestDatabase::create_or_skip(backend).await?;
        let store = db.open_store().await;
        Some(Fixture { store, db })
    }

    /// A new account named `label`, with the default environments.
    async fn tenant(&self, label: &str) -> Tenant {
        let boot = self
            .store
            .bootstrap_account(NewAccount {
                name: format!("{label} Inc."),
                owner_email: format!("owner@{label}.example"),
                owner_password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                workspace_name: "Main".into(),
                environments: DEFAULT_ENVIRONMENTS
                    .iter()
                    .map(|(name, tag)| (name.to_string(), tag.to_string()))
                    .collect(),
                token_name: "bootstrap".into(),
                token_hash_hex: hash(&format!("{label}-bootstrap-token")),
                token_hint: "kwm_…abcd".into(),
                primary_key: None,
            })
            .await
            .expect("bootstrap");
        Tenant {
            account: boot.account.id.clone(),
            workspace: boot.workspace.workspace.id.clone(),
            boot,
        }
    }

    /// Adds permissions to the tenant's catalog.
    async fn catalog(&self, tenant: &Tenant, names: &[&str]) {
        for name in names {
            self.store
                .create_permission(&tenant.account, &actor(), name, None)
                .await
                .expect("create permission");
        }
    }

    /// Creates a key from `new_key(…)` after `adjust` has changed it.
    async fn key(&self, tenant: &Tenant, name: &str, adjust: impl FnOnce(&mut NewKey)) -> ApiKey {
        let mut new = new_key(&tenant.workspace, name);
        adjust(&mut new);
        self.store
            .create_key(&tenant.account, &actor(), new)
            .await
            .expect("create key")
    }

    /// Runs SQL on the database directly, beside the store: for states no
    /// store method produces (stale claims, tampered rows).
    async fn raw_sql(&self, sql: &str) {
        use sqlx::{Connection, Executor};
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.db.url)
            .await
            .expect("raw connection");
        conn.execute(sql).await.expect("raw sql");
        conn.close().await.expect("close raw connection");
    }
}

struct Tenant {
    account: String,
    workspace: String,
    boot: Bootstrapped,
}

/// Who the suite's changes are made by, as the audit log should record it.
fn actor() -> Actor {
    Actor {
        member_id: Some("mem_suite".into()),
        token_id: Some("tok_suite".into()),
        ip: Some("192.0.2.10".into()),
    }
}

/// A stand-in for a SHA-256 hex digest, unique per label.
fn hash(label: &str) -> String {
    format!("{label:0>64}")
}

fn perm(name: &str) -> PermissionName {
    PermissionName::parse(name).expect("valid permission name")
}

fn net(cidr: &str) -> IpNet {
    cidr.parse().expect("valid CIDR")
}

fn new_key(workspace: &str, name: &str) -> NewKey {
    NewKey {
        workspace_id: workspace.to_owned(),
        environment: "production".into(),
        kind: KeyKind::Secret,
        name: name.to_owned(),
        hash_hex: hash(&format!("{workspace}-{name}")),
        hint: format!("kw_live_…{}", &name[name.len().saturating_sub(4)..]),
        permissions: vec![],
        customer_id: None,
        rate_limit: None,
        allowed_ips: vec![],
        expires_at: None,
        meta: serde_json::Map::new(),
        created_by: None,
        allowed_origins: vec![],
        public_value: None,
        credits: None,
    }
}

fn page(limit: u32, after: Option<&str>) -> PageRequest {
    PageRequest {
        limit,
        after: after.map(str::to_owned),
    }
}

/// Follows `next_after` through every page of `size`, checking that each
/// page but the last is full.
async fn all_pages<T, F, Fut>(size: u32, mut fetch: F) -> Vec<Vec<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = StoreResult<Page<T>>>,
{
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = fetch(page(size, after.as_deref()))
            .await
            .expect("list page");
        let last = page.next_after.is_none();
        if !last {
            assert_eq!(
                page.items.len(),
                size as usize,
                "a page before the last is full"
            );
        }
        pages.push(page.items);
        after = page.next_after;
        if last {
            return pages;
        }
    }
}

fn ids(keys: &[ApiKey]) -> Vec<String> {
    keys.iter().map(|k| k.id.clone()).collect()
}

// ── Error assertions ─────────────────────────────────────────────────────

#[track_caller]
fn assert_not_found<T: Debug>(result: StoreResult<T>, what: &str, field: Option<&str>) {
    match result {
        Err(StoreError::NotFound { what: w, field: f }) => {
            assert_eq!((w, f), (what, field), "NotFound names the wrong thing");
        }
        other => panic!("expected NotFound {what}, got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict<T: Debug>(result: StoreResult<T>, field: &str) -> String {
    match result {
        Err(StoreError::Conflict { field: f, message }) if f == field => message,
        other => panic!("expected Conflict on {field}, got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid<T: Debug>(result: StoreResult<T>, field: &str) -> String {
    match result {
        Err(StoreError::Invalid { field: f, message }) if f == field => message,
        other => panic!("expected Invalid on {field}, got {other:?}"),
    }
}

// ── Accounts, members, tokens ────────────────────────────────────────────

async fn bootstrap_creates_everything(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    assert_eq!(s.count_accounts().await.unwrap(), 0);
    let t = f.tenant("acme").await;
    let boot = &t.boot;

    assert_eq!(s.count_accounts().await.unwrap(), 1);
    assert!(boot.account.id.starts_with("acct_"));
    assert_eq!(boot.account.name, "acme Inc.");

    let owner = s.get_member(&t.account, &boot.owner.id).await.unwrap();
    assert_eq!(owner, boot.owner);
    assert_eq!(owner.role, Role::Owner);
    assert_eq!(owner.email, "owner@acme.example");
    assert_eq!(
        owner.effective_permissions(),
        AccountPermission::ALL.to_vec()
    );

    let workspaces = s
        .list_workspaces(&t.account, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(workspaces.items, vec![boot.workspace.workspace.clone()]);
    let environments = s.list_environments(&t.account, &t.workspace).await.unwrap();
    assert_eq!(environments, boot.workspace.environments);
    let names_and_tags: Vec<(&str, &str)> = environments
        .iter()
        .map(|e| (e.name.as_str(), e.tag.as_str()))
        .collect();
    assert_eq!(
        names_and_tags,
        DEFAULT_ENVIRONMENTS.to_vec(),
        "environments keep their order"
    );

    let token = s
        .get_management_token(&t.account, &boot.token.id)
        .await
        .unwrap();
    assert_eq!(token, boot.token);
    assert_eq!(token.member_id, owner.id);
    assert_eq!(token.permissions, AccountPermission::ALL.to_vec());

    let principal = s
        .find_token_by_hash(&hash("acme-bootstrap-token"))
        .await
        .unwrap()
        .expect("token found by hash");
    assert_eq!(principal.token, boot.token);
    assert_eq!(principal.member, owner);
    assert_eq!(
        principal.effective_permissions(),
        AccountPermission::ALL.to_vec()
    );

    // A second account of the same person reuses their user.
    let second = s
        .bootstrap_account(NewAccount {
            name: "Side project".into(),
            owner_email: "owner@acme.example".into(),
            owner_password_hash: "$argon2id$other".into(),
            workspace_name: "Side".into(),
            environments: vec![("production".into(), "live".into())],
            token_name: "bootstrap".into(),
            token_hash_hex: hash("side-token"),
            token_hint: "kwm_…side".into(),
            primary_key: None,
        })
        .await
        .unwrap();
    assert_eq!(second.owner.user_id, owner.user_id);
    assert_ne!(second.account.id, t.account);
    assert_eq!(s.count_accounts().await.unwrap(), 2);
}

async fn members_and_tokens(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;

    let dev = s
        .create_member(
            &t.account,
            &actor(),
            NewMember {
                email: "dev@acme.example".into(),
                role: Role::Member,
                permissions: vec![AccountPermission::VerifyKeys, AccountPermission::VerifyKeys],
            },
        )
        .await
        .unwrap();
    assert_eq!(
        dev.permissions,
        vec![AccountPermission::VerifyKeys],
        "grants de-duplicated"
    );
    assert_eq!(s.get_member(&t.account, &dev.id).await.unwrap(), dev);
    let again = s
        .create_member(
            &t.account,
            &actor(),
            NewMember {
                email: "dev@acme.example".into(),
                role: Role::Admin,
                permissions: vec![],
            },
        )
        .await;
    assert_conflict(again, "email");

    // Members page in id order.
    let pages = all_pages(1, |p| {
        let s = s.clone();
        let account = t.account.clone();
        async move { s.list_members(&account, &p).await }
    })
    .await;
    let listed: Vec<String> = pages.concat().iter().map(|m| m.id.clone()).collect();
    assert_eq!(listed, vec![t.boot.owner.id.clone(), dev.id.clone()]);

    // A token never does more than its member may.
    let token = s
        .create_management_token(
            &t.account,
            &actor(),
            NewManagementToken {
                member_id: dev.id.clone(),
                name: "ci".into(),
                hash_hex: hash("dev-token"),
                hint: "kwm_…dev1".into(),
                permissions: vec![
                    AccountPermission::ManageMembers,
                    AccountPermission::VerifyKeys,
                ],
                expires_at: Some(4_102_444_800_000),
            },
        )
        .await
        .unwrap();
    let principal = s
        .find_token_by_hash(&hash("dev-token"))
        .await
        .unwrap()
        .expect("found");
    assert_eq!(principal.token, token);
    assert_eq!(principal.member, dev);
    assert_eq!(
        principal.effective_permissions(),
        vec![AccountPermission::VerifyKeys]
    );
    assert!(
        s.find_token_by_hash(&hash("no-such-token"))
            .await
            .unwrap()
            .is_none()
    );

    let missing_member = s
        .create_management_token(
            &t.account,
            &actor(),
            NewManagementToken {
                member_id: "mem_nope".into(),
                name: "x".into(),
                hash_hex: hash("x"),
                hint: "x".into(),
                permissions: vec![],
                expires_at: None,
            },
        )
        .await;
    assert_not_found(missing_member, "member", Some("member_id"));

    let all = s
        .list_management_tokens(&t.account, None, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(all.items, vec![t.boot.token.clone(), token.clone()]);
    let devs = s
        .list_management_tokens(&t.account, Some(&dev.id), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(devs.items, vec![token.clone()]);
    assert_eq!(devs.next_after, None);

    s.delete_management_token(&t.account, &actor(), &token.id)
        .await
        .unwrap();
    assert!(
        s.find_token_by_hash(&hash("dev-token"))
            .await
            .unwrap()
            .is_none()
    );
    assert_not_found(
        s.delete_management_token(&t.account, &actor(), &token.id)
            .await,
        "management token",
        None,
    );
}

#[track_caller]
fn assert_refused<T: Debug>(result: StoreResult<T>, code: &str) {
    match result {
        Err(StoreError::Refused { code: c, .. }) if c == code => {}
        other => panic!("expected Refused {code}, got {other:?}"),
    }
}

async fn members_change_and_leave_but_an_owner_stays(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    let other = f.tenant("globex").await;
    let owner = t.boot.owner.id.clone();
    let new_member = |email: &str| NewMember {
        email: email.into(),
        role: Role::Member,
        permissions: vec![AccountPermission::VerifyKeys],
    };
    let dev = s
        .create_member(&t.account, &actor(), new_member("dev@acme.example"))
        .await
        .unwrap();

    // Grants change for members; a promotion clears them.
    let granted = s
        .update_member(
            &t.account,
            &actor(),
            &dev.id,
            MemberPatch {
                permissions: Some(vec![
                    AccountPermission::ManageApiCredentials,
                    AccountPermission::ManageApiCredentials,
                ]),
                ..MemberPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        granted.permissions,
        [AccountPermission::ManageApiCredentials]
    );
    assert_eq!(s.get_member(&t.account, &dev.id).await.unwrap(), granted);
    let admin = s
        .update_member(
            &t.account,
            &actor(),
            &dev.id,
            MemberPatch {
                role: Some(Role::Admin),
                ..MemberPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((admin.role, admin.permissions.len()), (Role::Admin, 0));
    assert_invalid(
        s.update_member(
            &t.account,
            &actor(),
            &dev.id,
            MemberPatch {
                permissions: Some(vec![AccountPermission::VerifyKeys]),
                ..MemberPatch::default()
            },
        )
        .await,
        "permissions",
    );

    // The last owner can be neither demoted nor removed…
    let demote = || MemberPatch {
        role: Some(Role::Admin),
        ..MemberPatch::default()
    };
    assert_refused(
        s.update_member(&t.account, &actor(), &owner, demote())
            .await,
        "last_owner",
    );
    assert_refused(
        s.delete_member(&t.account, &actor(), &owner).await,
        "last_owner",
    );
    // …until there is another.
    s.update_member(
        &t.account,
        &actor(),
        &dev.id,
        MemberPatch {
            role: Some(Role::Owner),
            ..MemberPatch::default()
        },
    )
    .await
    .unwrap();
    s.update_member(&t.account, &actor(), &owner, demote())
        .await
        .unwrap();
    assert_refused(
        s.delete_member(&t.account, &actor(), &dev.id).await,
        "last_owner",
    );

    // Two owners demoting each other at once: one wins, one is refused.
    s.update_member(
        &t.account,
        &actor(),
        &owner,
        MemberPatch {
            role: Some(Role::Owner),
            ..MemberPatch::default()
        },
    )
    .await
    .unwrap();
    let racers = [owner.clone(), dev.id.clone()].map(|id| {
        let (s, account) = (s.clone(), t.account.clone());
        tokio::spawn(async move {
            s.update_member(
                &account,
                &actor(),
                &id,
                MemberPatch {
                    role: Some(Role::Admin),
                    ..MemberPatch::default()
                },
            )
            .await
        })
    });
    let mut refused = 0;
    for racer in racers {
        match racer.await.expect("task") {
            Ok(_) => {}
            Err(StoreError::Refused {
                code: "last_owner", ..
            }) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(refused, 1);
    let members = s
        .list_members(&t.account, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(
        members
            .items
            .iter()
            .filter(|m| m.role == Role::Owner)
            .count(),
        1
    );

    // Removing a member removes their tokens.
    let leaver = s
        .create_member(&t.account, &actor(), new_member("leaver@acme.example"))
        .await
        .unwrap();
    s.create_management_token(
        &t.account,
        &actor(),
        NewManagementToken {
            member_id: leaver.id.clone(),
            name: "ci".into(),
            hash_hex: hash("leaver-token"),
            hint: "kwm_…lvr1".into(),
            permissions: vec![AccountPermission::VerifyKeys],
            expires_at: None,
        },
    )
    .await
    .unwrap();
    s.delete_member(&t.account, &actor(), &leaver.id)
        .await
        .unwrap();
    assert!(
        s.find_token_by_hash(&hash("leaver-token"))
            .await
            .unwrap()
            .is_none()
    );
    assert_not_found(s.get_member(&t.account, &leaver.id).await, "member", None);
    assert_not_found(
        s.delete_member(&t.account, &actor(), &leaver.id).await,
        "member",
        None,
    );

    // Another account's member is not there.
    assert_not_found(
        s.update_member(&other.account, &actor(), &dev.id, MemberPatch::default())
            .await,
        "member",
        None,
    );
    assert_not_found(
        s.delete_member(&other.account, &actor(), &dev.id).await,
        "member",
        None,
    );

    // Audited, with what changed; refusals left nothing.
    let events = audit_events(
        s,
        &t.account,
        AuditFilter {
            object_id: Some(dev.id.clone()),
            ..AuditFilter::default()
        },
    )
    .await;
    // (Whether the race's winner was this member decides a fifth event.)
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions[..4],
        [
            "member.created",
            "member.updated",
            "member.updated",
            "member.updated"
        ],
        "{events:?}"
    );
    assert_eq!(
        events[1].before,
        Some(json!({"permissions": ["keys:verify"]}))
    );
    assert_eq!(
        events[1].after,
        Some(json!({"permissions": ["manage_api_credentials"]}))
    );
    assert_eq!(
        events[2].after,
        Some(json!({"role": "admin", "permissions": []}))
    );
    let removed = audit_events(
        s,
        &t.account,
        AuditFilter {
            action: Some("member.deleted".into()),
            ..AuditFilter::default()
        },
    )
    .await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].object_id, leaver.id);
    assert_eq!(
        removed[0].before,
        Some(
            json!({"email": "leaver@acme.example", "role": "member", "permissions": ["keys:verify"]})
        )
    );
    assert_eq!(
        s.verify_audit_chain(&t.account, None).await.unwrap().broken,
        None
    );
}

async fn accounts_cannot_reach_each_other(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let a = f.tenant("alpha").await;
    let b = f.tenant("bravo").await;
    let key = f.key(&a, "alpha key", |_| {}).await;
    let entry = s
        .create_allowlist_entry(
            &a.account,
            &actor(),
            NewAllowlistEntry {
                cidr: net("10.0.0.0/8"),
                description: None,
                workspace_ids: vec![a.workspace.clone()],
            },
        )
        .await
        .unwrap();
    let (a_member, a_token) = (&a.boot.owner.id, &a.boot.token.id);
    let ws = &a.workspace;
    let bx = &b.account;

    // Workspaces and environments.
    assert_not_found(s.get_workspace(bx, ws).await, "workspace", None);
    assert_not_found(
        s.rename_workspace(bx, &actor(), ws, "mine now").await,
        "workspace",
        None,
    );
    assert_not_found(
        s.delete_workspace(bx, &actor(), ws).await,
        "workspace",
        None,
    );
    assert_not_found(s.list_environments(bx, ws).await, "workspace", None);
    assert_not_found(
        s.create_environment(bx, &actor(), ws, "qa", "qa").await,
        "workspace",
        None,
    );
    // Keys.
    assert_not_found(s.get_key(bx, &key.id).await, "key", None);
    let rename = KeyPatch {
        name: Some("stolen".into()),
        ..Default::default()
    };
    assert_not_found(
        s.update_key(bx, &actor(), &key.id, rename).await,
        "key",
        None,
    );
    assert_not_found(
        s.set_key_status(bx, &actor(), &key.id, KeyStatus::Revoked)
            .await,
        "key",
        None,
    );
    let planted = s.create_key(bx, &actor(), new_key(ws, "planted")).await;
    assert_not_found(planted, "workspace", Some("workspace_id"));
    let filter = KeyFilter {
        workspace_id: Some(ws.clone()),
        ..Default::default()
    };
    assert!(
        s.list_keys(bx, &filter, &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        s.list_keys(bx, &KeyFilter::default(), &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // Allowlist.
    assert_not_found(
        s.delete_allowlist_entry(bx, &actor(), &entry.id).await,
        "allowlist entry",
        None,
    );
    assert!(s.list_allowlist(bx).await.unwrap().is_empty());
    let grant_foreign = NewAllowlistEntry {
        cidr: net("192.0.2.0/24"),
        description: None,
        workspace_ids: vec![b.workspace.clone(), ws.clone()],
    };
    assert_not_found(
        s.create_allowlist_entry(bx, &actor(), grant_foreign).await,
        "workspace",
        Some("workspace_ids"),
    );
    assert!(
        s.list_allowlist(bx).await.unwrap().is_empty(),
        "a refused entry leaves nothing behind"
    );
    // Members and tokens.
    assert_not_found(s.get_member(bx, a_member).await, "member", None);
    assert_not_found(
        s.get_management_token(bx, a_token).await,
        "management token",
        None,
    );
    assert_not_found(
        s.delete_management_token(bx, &actor(), a_token).await,
        "management token",
        None,
    );
    let token_for_foreign_member = NewManagementToken {
        member_id: a_member.clone(),
        name: "sneaky".into(),
        hash_hex: hash("sneaky"),
        hint: "x".into(),
        permissions: AccountPermission::ALL.to_vec(),
        expires_at: None,
    };
    let sneaky = s
        .create_management_token(bx, &actor(), token_for_foreign_member)
        .await;
    assert_not_found(sneaky, "member", Some("member_id"));
    let b_members = s.list_members(bx, &PageRequest::default()).await.unwrap();
    assert_eq!(b_members.items, vec![b.boot.owner.clone()]);
    let b_tokens = s
        .list_management_tokens(bx, None, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(b_tokens.items, vec![b.boot.token.clone()]);
    let foreign_member_filter = s
        .list_management_tokens(bx, Some(a_member), &PageRequest::default())
        .await;
    assert!(foreign_member_filter.unwrap().items.is_empty());

    // Nothing of alpha's moved.
    assert_eq!(s.get_key(&a.account, &key.id).await.unwrap(), key);
    assert_eq!(
        s.get_workspace(&a.account, ws).await.unwrap(),
        a.boot.workspace.workspace
    );
    assert_eq!(s.list_allowlist(&a.account).await.unwrap(), vec![entry]);
    assert_eq!(
        s.get_management_token(&a.account, a_token).await.unwrap(),
        a.boot.token
    );
}

// ── Workspaces, environments, catalog ────────────────────────────────────

async fn workspaces_and_environments(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;

    let second = s
        .create_workspace(
            &t.account,
            &actor(),
            NewWorkspace {
                name: "Main".into(),
                environments: vec![("qa".into(), "qa".into())],
                primary_key: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        second.workspace.name, "Main",
        "workspace names need not be unique"
    );
    assert_eq!(second.environments.len(), 1);

    let renamed = s
        .rename_workspace(&t.account, &actor(), &second.workspace.id, "Billing")
        .await
        .unwrap();
    assert_eq!(renamed.name, "Billing");
    assert_eq!(
        s.get_workspace(&t.account, &second.workspace.id)
            .await
            .unwrap(),
        renamed
    );

    let pages = all_pages(1, |p| {
        let (s, account) = (s.clone(), t.account.clone());
        async move { s.list_workspaces(&account, &p).await }
    })
    .await;
    assert_eq!(pages.len(), 2);
    assert_eq!(
        pages.concat(),
        vec![t.boot.workspace.workspace.clone(), renamed]
    );

    let eu = s
        .create_environment(&t.account, &actor(), &t.workspace, "eu-production", "eu")
        .await
        .unwrap();
    assert_eq!(
        (eu.name.as_str(), eu.tag.as_str(), eu.workspace_id.as_str()),
        ("eu-production", "eu", t.workspace.as_str())
    );
    assert_conflict(
        s.create_environment(&t.account, &actor(), &t.workspace, "production", "prod2")
            .await,
        "name",
    );
    assert_conflict(
        s.create_environment(&t.account, &actor(), &t.workspace, "prod2", "live")
            .await,
        "tag",
    );
    // The same name in another workspace is fine.
    s.create_environment(
        &t.account,
        &actor(),
        &second.workspace.id,
        "production",
        "live",
    )
    .await
    .unwrap();
    let listed = s.list_environments(&t.account, &t.workspace).await.unwrap();
    assert_eq!(listed.len(), 4);
    assert_eq!(listed.last(), Some(&eu));

    // A workspace whose environments clash is not created at all.
    let clash = s
        .create_workspace(
            &t.account,
            &actor(),
            NewWorkspace {
                name: "Clash".into(),
                environments: vec![("a".into(), "x".into()), ("b".into(), "x".into())],
                primary_key: None,
            },
        )
        .await;
    assert_conflict(clash, "tag");
    let all = s
        .list_workspaces(&t.account, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2, "the refused workspace was rolled back");
}

async fn permission_catalog(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;

    let read = s
        .create_permission(
            &t.account,
            &actor(),
            "customers:read",
            Some("Read customers"),
        )
        .await
        .unwrap();
    assert_eq!(read.name, perm("customers:read"));
    assert_eq!(read.description.as_deref(), Some("Read customers"));
    f.catalog(&t, &["a_b:c", "axb:c", "customers:write"]).await;
    assert_conflict(
        s.create_permission(&t.account, &actor(), "customers:read", None)
            .await,
        "name",
    );
    let names: Vec<String> = s
        .list_permissions(&t.account)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name.to_string())
        .collect();
    assert_eq!(
        names,
        ["a_b:c", "axb:c", "customers:read", "customers:write"]
    );

    // Another account has a catalog of its own.
    let other = f.tenant("other").await;
    assert!(s.list_permissions(&other.account).await.unwrap().is_empty());
    s.create_permission(&other.account, &actor(), "customers:read", None)
        .await
        .unwrap();

    // In use: refused, naming how many keys hold it.
    f.key(&t, "one", |k| k.permissions = vec![perm("customers:read")])
        .await;
    let two = f
        .key(&t, "two", |k| {
            k.permissions = vec![perm("customers:read"), perm("customers:write")]
        })
        .await;
    f.key(&t, "three", |k| {
        k.permissions = vec![perm("axb:c"), perm("customers:write")]
    })
    .await;
    let refused = s
        .delete_permission(&t.account, &actor(), "customers:read")
        .await;
    match refused {
        Err(StoreError::InUse { message }) => assert!(message.contains("2 keys"), "{message}"),
        other => panic!("expected InUse, got {other:?}"),
    }
    assert_eq!(
        s.list_permissions(&t.account).await.unwrap().len(),
        4,
        "nothing deleted"
    );
    let write = s
        .delete_permission(&t.account, &actor(), "customers:write")
        .await;
    assert!(matches!(write, Err(StoreError::InUse { message }) if message.contains("2 keys")));

    // Unused: deleted. (`a_b:c` would match `axb:c` in an unescaped LIKE.)
    s.delete_permission(&t.account, &actor(), "a_b:c")
        .await
        .unwrap();
    assert_not_found(
        s.delete_permission(&t.account, &actor(), "a_b:c").await,
        "permission",
        None,
    );
    let patch = KeyPatch {
        permissions: Some(vec![perm("customers:write")]),
        ..Default::default()
    };
    s.update_key(&t.account, &actor(), &two.id, patch)
        .await
        .unwrap();
    let read = s
        .delete_permission(&t.account, &actor(), "customers:read")
        .await;
    assert!(matches!(read, Err(StoreError::InUse { message }) if message.contains("1 key;")));
    // The other account's keys hold nothing: its copy goes.
    s.delete_permission(&other.account, &actor(), "customers:read")
        .await
        .unwrap();
}

// ── Keys ─────────────────────────────────────────────────────────────────

async fn key_round_trip(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    f.catalog(&t, &["customers:read", "customers:write"]).await;

    let before = keyward_now();
    let created = f
        .key(&t, "Main Website Integration", |k| {
            k.environment = "staging".into();
            k.kind = KeyKind::Ingest;
            k.permissions = vec![
                perm("customers:write"),
                perm("customers:read"),
                perm("customers:write"),
            ];
            k.customer_id = Some("cus_123".into());
            k.rate_limit = Some(RateLimitPolicy {
                limit: 100,
                window_seconds: 60,
            });
            k.allowed_ips = vec![net("203.0.113.0/24"), net("2001:db8::/32")];
            k.expires_at = Some(4_102_444_800_000);
            k.meta = json!({"plan": "pro", "nested": {"n": 1}})
                .as_object()
                .cloned()
                .unwrap();
            k.created_by = Some(t.boot.owner.id.clone());
        })
        .await;
    assert!(created.id.starts_with("key_"));
    assert_eq!(created.account_id, t.account);
    assert_eq!(created.workspace_id, t.workspace);
    assert_eq!(created.environment, "staging");
    assert_eq!(created.kind, KeyKind::Ingest);
    assert_eq!(created.status, KeyStatus::Active);
    assert_eq!(
        created.permissions,
        vec![perm("customers:read"), perm("customers:write")],
        "sorted, de-duplicated"
    );
    assert_eq!(created.hint, "kw_live_…tion");
    assert!(created.created_at >= before && created.updated_at == created.created_at);
    assert_eq!(
        (created.last_used_at, created.last_used_ip.as_deref()),
        (None, None)
    );

    let fetched = s.get_key(&t.account, &created.id).await.unwrap();
    assert_eq!(fetched, created);
    let by_hash = s
        .find_key_for_verification(&hash(&format!("{}-Main Website Integration", t.workspace)))
        .await
        .unwrap()
        .expect("found by hash");
    assert_eq!(by_hash.key, created);
    assert!(by_hash.workspace_allowlist.is_empty());
    assert!(
        s.find_key_for_verification(&hash("nope"))
            .await
            .unwrap()
            .is_none()
    );
    assert_not_found(s.get_key(&t.account, "key_nope").await, "key", None);
}

fn keyward_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

async fn key_rules_on_create(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    f.catalog(&t, &["customers:read"]).await;
    let other_ws = s
        .create_workspace(
            &t.account,
            &actor(),
            NewWorkspace {
                name: "Other".into(),
                environments: vec![("qa".into(), "qa".into())],
                primary_key: None,
            },
        )
        .await
        .unwrap()
        .workspace
        .id;

    f.key(&t, "primary", |_| {}).await;
    let duplicate = s
        .create_key(
            &t.account,
            &actor(),
            NewKey {
                hash_hex: hash("dup"),
                ..new_key(&t.workspace, "primary")
            },
        )
        .await;
    assert_conflict(duplicate, "name");
    // The same name in another workspace is another key.
    let elsewhere = NewKey {
        environment: "qa".into(),
        ..new_key(&other_ws, "primary")
    };
    s.create_key(&t.account, &actor(), elsewhere).await.unwrap();

    let unknown_env = NewKey {
        environment: "qa".into(),
        ..new_key(&t.workspace, "qa key")
    };
    assert_not_found(
        s.create_key(&t.account, &actor(), unknown_env).await,
        "environment",
        Some("environment"),
    );
    let unknown_ws = new_key("ws_nope", "lost");
    assert_not_found(
        s.create_key(&t.account, &actor(), unknown_ws).await,
        "workspace",
        Some("workspace_id"),
    );

    let uncatalogued = NewKey {
        permissions: vec![
            perm("customers:read"),
            perm("orders:read"),
            perm("orders:write"),
        ],
        ..new_key(&t.workspace, "too much")
    };
    let message = assert_invalid(
        s.create_key(&t.account, &actor(), uncatalogued).await,
        "permissions",
    );
    assert!(
        message.contains("orders:read") && message.contains("orders:write"),
        "{message}"
    );
    assert!(!message.contains("customers:read"), "{message}");

    let keys = s
        .list_keys(&t.account, &KeyFilter::default(), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(keys.items.len(), 2, "refused keys were not stored");
}

async fn list_keys_filters_and_pages(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    let mut production = Vec::new();
    for i in 0..7 {
        production.push(f.key(&t, &format!("prod {i}"), |_| {}).await);
    }
    for i in 0..3 {
        f.key(&t, &format!("staging {i}"), |k| {
            k.environment = "staging".into()
        })
        .await;
    }
    for key in [&production[1], &production[4]] {
        s.set_key_status(&t.account, &actor(), &key.id, KeyStatus::Inactive)
            .await
            .unwrap();
    }

    let filter = KeyFilter {
        environment: Some("production".into()),
        ..Default::default()
    };
    let pages = all_pages(3, |p| {
        let (s, account, filter) = (s.clone(), t.account.clone(), filter.clone());
        async move { s.list_keys(&account, &filter, &p).await }
    })
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    assert_eq!(
        ids(&pages.concat()),
        ids(&production),
        "in id (creation) order"
    );

    let active_production = KeyFilter {
        workspace_id: Some(t.workspace.clone()),
        environment: Some("production".into()),
        status: Some(KeyStatus::Active),
        kind: Some(KeyKind::Secret),
    };
    let pages = all_pages(2, |p| {
        let (s, account, filter) = (s.clone(), t.account.clone(), active_production.clone());
        async move { s.list_keys(&account, &filter, &p).await }
    })
    .await;
    let expected: Vec<String> = [0, 2, 3, 5, 6]
        .iter()
        .map(|&i| production[i].id.clone())
        .collect();
    assert_eq!(ids(&pages.concat()), expected);
    assert!(pages.concat().iter().all(|k| k.status == KeyStatus::Active));

    let inactive = KeyFilter {
        status: Some(KeyStatus::Inactive),
        ..Default::default()
    };
    let listed = s
        .list_keys(&t.account, &inactive, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(
        ids(&listed.items),
        vec![production[1].id.clone(), production[4].id.clone()]
    );

    let staging = KeyFilter {
        environment: Some("staging".into()),
        ..Default::default()
    };
    let listed = s
        .list_keys(&t.account, &staging, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 3);
    assert!(listed.items.iter().all(|k| k.environment == "staging"));

    let nowhere = KeyFilter {
        workspace_id: Some("ws_nope".into()),
        ..Default::default()
    };
    assert!(
        s.list_keys(&t.account, &nowhere, &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // An exactly full last page has no next page.
    let all = s
        .list_keys(&t.account, &KeyFilter::default(), &page(10, None))
        .await
        .unwrap();
    assert_eq!((all.items.len(), all.next_after), (10, None));

    // By kind: the ten are secret keys.
    let ingest = f.key(&t, "ingest", |k| k.kind = KeyKind::Ingest).await;
    let ingest_only = KeyFilter {
        kind: Some(KeyKind::Ingest),
        ..Default::default()
    };
    let listed = s
        .list_keys(&t.account, &ingest_only, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(ids(&listed.items), vec![ingest.id.clone()]);
}

async fn page_size_defaults_and_clamps(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    for i in 0..101 {
        f.key(&t, &format!("key {i:03}"), |_| {}).await;
    }
    let everything = KeyFilter::default();
    let default = s
        .list_keys(&t.account, &everything, &page(0, None))
        .await
        .unwrap();
    assert_eq!(default.items.len(), 50);
    assert_eq!(
        default.next_after.as_deref(),
        default.items.last().map(|k| k.id.as_str())
    );
    let clamped = s
        .list_keys(&t.account, &everything, &page(1000, None))
        .await
        .unwrap();
    assert_eq!(clamped.items.len(), 100);
    let rest = s
        .list_keys(
            &t.account,
            &everything,
            &page(1000, clamped.next_after.as_deref()),
        )
        .await
        .unwrap();
    assert_eq!((rest.items.len(), rest.next_after), (1, None));
}

async fn update_key_fields(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    f.catalog(&t, &["customers:read", "customers:write"]).await;
    f.key(&t, "taken", |_| {}).await;
    let original = f
        .key(&t, "original", |k| {
            k.permissions = vec![perm("customers:read")];
            k.customer_id = Some("cus_1".into());
            k.rate_limit = Some(RateLimitPolicy {
                limit: 5,
                window_seconds: 1,
            });
            k.allowed_ips = vec![net("10.0.0.0/8")];
            k.expires_at = Some(4_000_000_000_000);
            k.meta = json!({"a": 1}).as_object().cloned().unwrap();
        })
        .await;
    let update = |patch: KeyPatch| {
        let (s, account, id) = (s.clone(), t.account.clone(), original.id.clone());
        async move { s.update_key(&account, &actor(), &id, patch).await }
    };

    // An empty patch changes nothing but updated_at.
    let same = update(KeyPatch::default()).await.unwrap();
    assert_eq!(
        ApiKey {
            updated_at: original.updated_at,
            ..same.clone()
        },
        original
    );
    assert!(same.updated_at >= original.updated_at);

    let changed = update(KeyPatch {
        name: Some("renamed".into()),
        permissions: Some(vec![perm("customers:write"), perm("customers:read")]),
        customer_id: Some(Some("cus_2".into())),
        rate_limit: Some(Some(RateLimitPolicy {
            limit: 1000,
            window_seconds: 3600,
        })),
        allowed_ips: Some(vec![net("192.0.2.1/32")]),
        expires_at: Some(Some(4_100_000_000_000)),
        meta: Some(json!({"b": [true, null]}).as_object().cloned().unwrap()),
        allowed_origins: Some(vec!["https://shop.example".into()]),
        credits: Some(Some(CreditSetting {
            remaining: 500,
            refill: None,
        })),
    })
    .await
    .unwrap();
    assert_eq!(changed.name, "renamed");
    assert_eq!(changed.credits.map(|c| c.remaining), Some(500));
    assert_eq!(
        changed.permissions,
        vec![perm("customers:read"), perm("customers:write")]
    );
    assert_eq!(changed.customer_id.as_deref(), Some("cus_2"));
    assert_eq!(
        changed.rate_limit,
        Some(RateLimitPolicy {
            limit: 1000,
            window_seconds: 3600
        })
    );
    assert_eq!(changed.allowed_ips, vec![net("192.0.2.1/32")]);
    assert_eq!(changed.expires_at, Some(4_100_000_000_000));
    assert_eq!(
        changed.allowed_origins,
        vec!["https://shop.example".to_owned()]
    );
    assert_eq!(
        serde_json::Value::Object(changed.meta.clone()),
        json!({"b": [true, null]})
    );
    assert_eq!(s.get_key(&t.account, &original.id).await.unwrap(), changed);

    let cleared = update(KeyPatch {
        permissions: Some(vec![]),
        customer_id: Some(None),
        rate_limit: Some(None),
        allowed_ips: Some(vec![]),
        expires_at: Some(None),
        meta: Some(serde_json::Map::new()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(cleared.name, "renamed", "unset fields stay");
    assert!(cleared.permissions.is_empty());
    assert_eq!(
        (
            cleared.customer_id.clone(),
            cleared.rate_limit,
            cleared.expires_at
        ),
        (None, None, None)
    );
    assert!(cleared.allowed_ips.is_empty() && cleared.meta.is_empty());
    assert_eq!(s.get_key(&t.account, &original.id).await.unwrap(), cleared);

    // The rules of create apply.
    assert_conflict(
        update(KeyPatch {
            name: Some("taken".into()),
            ..Default::default()
        })
        .await,
        "name",
    );
    let renamed_to_itself = update(KeyPatch {
        name: Some("renamed".into()),
        ..Default::default()
    })
    .await;
    let current = renamed_to_itself.unwrap();
    assert_eq!(
        ApiKey {
            updated_at: cleared.updated_at,
            ..current.clone()
        },
        cleared
    );
    let bad_permissions = KeyPatch {
        permissions: Some(vec![perm("orders:read")]),
        ..Default::default()
    };
    let message = assert_invalid(update(bad_permissions).await, "permissions");
    assert!(message.contains("orders:read"));
    assert_eq!(
        s.get_key(&t.account, &original.id).await.unwrap(),
        current,
        "refused patches change nothing"
    );
    let missing = s
        .update_key(&t.account, &actor(), "key_nope", KeyPatch::default())
        .await;
    assert_not_found(missing, "key", None);
}

async fn key_status_and_revocation(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    let key = f.key(&t, "k", |_| {}).await;
    let set = |status| {
        let (s, account, id) = (s.clone(), t.account.clone(), key.id.clone());
        async move { s.set_key_status(&account, &actor(), &id, status).await }
    };

    assert_eq!(
        set(KeyStatus::Inactive).await.unwrap().status,
        KeyStatus::Inactive
    );
    assert_eq!(
        set(KeyStatus::Active).await.unwrap().status,
        KeyStatus::Active
    );
    assert_eq!(
        set(KeyStatus::Expired).await.unwrap().status,
        KeyStatus::Expired
    );
    let revoked = set(KeyStatus::Revoked).await.unwrap();
    assert_eq!(revoked.status, KeyStatus::Revoked);
    assert!(revoked.updated_at >= key.updated_at);
    for status in [KeyStatus::Active, KeyStatus::Inactive, KeyStatus::Expired] {
        assert_conflict(set(status).await, "status");
    }
    assert_eq!(
        set(KeyStatus::Revoked).await.unwrap().status,
        KeyStatus::Revoked,
        "revoking again is fine"
    );
    assert_eq!(
        s.get_key(&t.account, &key.id).await.unwrap().status,
        KeyStatus::Revoked
    );
    assert_not_found(
        s.set_key_status(&t.account, &actor(), "key_nope", KeyStatus::Active)
            .await,
        "key",
        None,
    );
}

async fn verification_sees_its_workspace_allowlist(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    let w1 = t.workspace.clone();
    let w2 = s
        .create_workspace(
            &t.account,
            &actor(),
            NewWorkspace {
                name: "W2".into(),
                environments: vec![("production".into(), "live".into())],
                primary_key: None,
            },
        )
        .await
        .unwrap()
        .workspace
        .id;
    let entry = |cidr: &str, workspaces: &[&String]| NewAllowlistEntry {
        cidr: net(cidr),
        description: Some(format!("range {cidr}")),
        workspace_ids: workspaces.iter().map(|w| (*w).clone()).collect(),
    };
    let e1 = s
        .create_allowlist_entry(&t.account, &actor(), entry("10.1.0.0/16", &[&w1]))
        .await
        .unwrap();
    let e2 = s
        .create_allowlist_entry(
            &t.account,
            &actor(),
            entry("2001:db8::/48", &[&w2, &w1, &w1]),
        )
        .await
        .unwrap();
    let e3 = s
        .create_allowlist_entry(&t.account, &actor(), entry("172.16.0.0/12", &[&w2]))
        .await
        .unwrap();
    let mut both = vec![w1.clone(), w2.clone()];
    both.sort();
    assert_eq!(e2.workspace_ids, both, "sorted, de-duplicated");
    assert_eq!(
        s.list_allowlist(&t.account).await.unwrap(),
        vec![e1.clone(), e2.clone(), e3.clone()]
    );
    // Another account's ranges never leak in.
    let other = f.tenant("other").await;
    s.create_allowlist_entry(
        &other.account,
        &actor(),
        entry("0.0.0.0/0", &[&other.workspace]),
    )
    .await
    .unwrap();

    let in_w1 = f.key(&t, "in w1", |_| {}).await;
    let in_w2 = s
        .create_key(&t.account, &actor(), new_key(&w2, "in w2"))
        .await
        .unwrap();
    let ranges = |key: &ApiKey| {
        let (s, hash_hex) = (
            s.clone(),
            hash(&format!("{}-{}", key.workspace_id, key.name)),
        );
        async move {
            let record = s
                .find_key_for_verification(&hash_hex)
                .await
                .unwrap()
                .expect("key found");
            record
                .workspace_allowlist
                .into_iter()
                .collect::<BTreeSet<_>>()
        }
    };
    assert_eq!(
        ranges(&in_w1).await,
        BTreeSet::from([net("10.1.0.0/16"), net("2001:db8::/48")])
    );
    assert_eq!(
        ranges(&in_w2).await,
        BTreeSet::from([net("172.16.0.0/12"), net("2001:db8::/48")])
    );

    s.delete_allowlist_entry(&t.account, &actor(), &e2.id)
        .await
        .unwrap();
    assert_eq!(ranges(&in_w1).await, BTreeSet::from([net("10.1.0.0/16")]));
    assert_not_found(
        s.delete_allowlist_entry(&t.account, &actor(), &e2.id).await,
        "allowlist entry",
        None,
    );
    let missing = entry("10.9.0.0/16", &[&w1, &"ws_nope".to_owned()]);
    assert_not_found(
        s.create_allowlist_entry(&t.account, &actor(), missing)
            .await,
        "workspace",
        Some("workspace_ids"),
    );
}

async fn key_usage_moves_forward_only(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    let k1 = f.key(&t, "one", |_| {}).await;
    let k2 = f.key(&t, "two", |_| {}).await;
    let usage = |key: &ApiKey, at: i64, ip: Option<&str>| KeyUsage {
        account_id: key.account_id.clone(),
        key_id: key.id.clone(),
        replaced_secret: false,
        at,
        ip: ip.map(str::to_owned),
    };
    let last_use = |key: &ApiKey| {
        let (s, account, id) = (s.clone(), t.account.clone(), key.id.clone());
        async move {
            let key = s.get_key(&account, &id).await.unwrap();
            (key.last_used_at, key.last_used_ip)
        }
    };

    s.record_key_usage(&[]).await.unwrap();
    let missing = KeyUsage {
        account_id: t.account.clone(),
        key_id: "key_gone".into(),
        replaced_secret: false,
        at: 1,
        ip: None,
    };
    s.record_key_usage(&[
        usage(&k1, 1_000, Some("192.0.2.1")),
        missing,
        usage(&k2, 2_000, None),
    ])
    .await
    .unwrap();
    assert_eq!(last_use(&k1).await, (Some(1_000), Some("192.0.2.1".into())));
    assert_eq!(last_use(&k2).await, (Some(2_000), None));

    s.record_key_usage(&[usage(&k1, 500, Some("198.51.100.7"))])
        .await
        .unwrap();
    assert_eq!(
        last_use(&k1).await,
        (Some(1_000), Some("192.0.2.1".into())),
        "never backwards"
    );

    // The latest use in a batch wins, whatever the order.
    s.record_key_usage(&[
        usage(&k1, 4_000, Some("192.0.2.4")),
        usage(&k1, 3_000, Some("192.0.2.3")),
    ])
    .await
    .unwrap();
    assert_eq!(last_use(&k1).await, (Some(4_000), Some("192.0.2.4".into())));
    assert_eq!(
        s.get_key(&t.account, &k1.id).await.unwrap().updated_at,
        k1.updated_at,
        "use is not an update"
    );

    // A use recorded for another account never touches this one's key.
    let intruder = f.tenant("intruder").await;
    let forged = KeyUsage {
        account_id: intruder.account.clone(),
        ..usage(&k2, 9_000, Some("203.0.113.66"))
    };
    s.record_key_usage(&[forged]).await.unwrap();
    assert_eq!(last_use(&k2).await, (Some(2_000), None));
}

async fn token_usage_moves_forward_only(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    let token = &t.boot.token;
    let used = |at: i64| TokenUsage {
        account_id: t.account.clone(),
        token_id: token.id.clone(),
        at,
    };
    let last_use = || async {
        s.get_management_token(&t.account, &token.id)
            .await
            .unwrap()
            .last_used_at
    };
    assert_eq!(last_use().await, None);

    s.record_token_usage(&[]).await.unwrap();
    let gone = TokenUsage {
        token_id: "tok_gone".into(),
        ..used(1)
    };
    s.record_token_usage(&[used(2_000), gone, used(1_000)])
        .await
        .unwrap();
    assert_eq!(last_use().await, Some(2_000), "the latest use in a batch");
    s.record_token_usage(&[used(1_500)]).await.unwrap();
    assert_eq!(last_use().await, Some(2_000), "never backwards");

    // A use recorded for another account never touches this one's token.
    let intruder = f.tenant("intruder").await;
    let forged = TokenUsage {
        account_id: intruder.account.clone(),
        ..used(9_000)
    };
    s.record_token_usage(&[forged]).await.unwrap();
    assert_eq!(last_use().await, Some(2_000));
}

async fn deleting_a_workspace_cascades(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    let keep = s
        .create_workspace(
            &t.account,
            &actor(),
            NewWorkspace {
                name: "Keep".into(),
                environments: vec![("production".into(), "live".into())],
                primary_key: None,
            },
        )
        .await
        .unwrap()
        .workspace
        .id;
    let doomed = f.key(&t, "doomed", |_| {}).await;
    let kept = s
        .create_key(&t.account, &actor(), new_key(&keep, "kept"))
        .await
        .unwrap();
    let entry = s
        .create_allowlist_entry(
            &t.account,
            &actor(),
            NewAllowlistEntry {
                cidr: net("10.0.0.0/8"),
                description: None,
                workspace_ids: vec![t.workspace.clone(), keep.clone()],
            },
        )
        .await
        .unwrap();

    s.delete_workspace(&t.account, &actor(), &t.workspace)
        .await
        .unwrap();
    assert_not_found(
        s.get_workspace(&t.account, &t.workspace).await,
        "workspace",
        None,
    );
    assert_not_found(s.get_key(&t.account, &doomed.id).await, "key", None);
    assert!(
        s.find_key_for_verification(&hash(&format!("{}-doomed", t.workspace)))
            .await
            .unwrap()
            .is_none()
    );
    assert_not_found(
        s.list_environments(&t.account, &t.workspace).await,
        "workspace",
        None,
    );
    let all_keys = s
        .list_keys(&t.account, &KeyFilter::default(), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(all_keys.items, vec![kept]);
    let allowlist = s.list_allowlist(&t.account).await.unwrap();
    assert_eq!(
        allowlist,
        vec![AllowlistEntry {
            workspace_ids: vec![keep.clone()],
            ..entry
        }]
    );
    assert_not_found(
        s.delete_workspace(&t.account, &actor(), &t.workspace).await,
        "workspace",
        None,
    );
    // The environment names are free again in a new workspace.
    s.create_workspace(
        &t.account,
        &actor(),
        NewWorkspace {
            name: "Main".into(),
            environments: vec![("production".into(), "live".into())],
            primary_key: None,
        },
    )
    .await
    .unwrap();
}

// ── Idempotency ──────────────────────────────────────────────────────────

async fn idempotency_lifecycle(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    let other = f.tenant("other").await;
    let a = &t.account;

    assert_eq!(
        s.begin_idempotent(a, "k1", "fp-1").await.unwrap(),
        IdempotencyClaim::Claimed
    );
    assert_eq!(
        s.begin_idempotent(a, "k1", "fp-1").await.unwrap(),
        IdempotencyClaim::InProgress
    );
    assert_eq!(
        s.begin_idempotent(a, "k1", "fp-2").await.unwrap(),
        IdempotencyClaim::Mismatch
    );
    // Keys are per account.
    assert_eq!(
        s.begin_idempotent(&other.account, "k1", "fp-2")
            .await
            .unwrap(),
        IdempotencyClaim::Claimed
    );

    s.finish_idempotent(a, "k1", 201, r#"{"id":"key_1"}"#)
        .await
        .unwrap();
    let replay = IdempotencyClaim::Completed {
        status: 201,
        body: r#"{"id":"key_1"}"#.into(),
    };
    assert_eq!(s.begin_idempotent(a, "k1", "fp-1").await.unwrap(), replay);
    assert_eq!(
        s.begin_idempotent(a, "k1", "fp-2").await.unwrap(),
        IdempotencyClaim::Mismatch
    );
    s.abandon_idempotent(a, "k1").await.unwrap();
    assert_eq!(
        s.begin_idempotent(a, "k1", "fp-1").await.unwrap(),
        replay,
        "a finished key is not abandoned"
    );
    assert_not_found(
        s.finish_idempotent(a, "k1", 200, "{}").await,
        "idempotency key",
        None,
    );

    assert_eq!(
        s.begin_idempotent(a, "k2", "fp-1").await.unwrap(),
        IdempotencyClaim::Claimed
    );
    s.abandon_idempotent(a, "k2").await.unwrap();
    assert_eq!(
        s.begin_idempotent(a, "k2", "fp-3").await.unwrap(),
        IdempotencyClaim::Claimed,
        "abandoned: free again"
    );
    assert_not_found(
        s.finish_idempotent(a, "never", 200, "{}").await,
        "idempotency key",
        None,
    );
}

async fn stale_idempotency_claims_are_reclaimed(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    let a = &t.account;
    assert_eq!(
        s.begin_idempotent(a, "stale", "fp").await.unwrap(),
        IdempotencyClaim::Claimed
    );
    assert_eq!(
        s.begin_idempotent(a, "fresh", "fp").await.unwrap(),
        IdempotencyClaim::Claimed
    );
    let six_minutes_ago = keyward_now() - 6 * 60 * 1000;
    f.raw_sql(&format!(
        "UPDATE idempotency_keys SET created_at = {six_minutes_ago} WHERE key = 'stale'"
    ))
    .await;

    assert_eq!(
        s.begin_idempotent(a, "stale", "other-fp").await.unwrap(),
        IdempotencyClaim::Mismatch
    );
    assert_eq!(
        s.begin_idempotent(a, "stale", "fp").await.unwrap(),
        IdempotencyClaim::Claimed
    );
    assert_eq!(
        s.begin_idempotent(a, "stale", "fp").await.unwrap(),
        IdempotencyClaim::InProgress,
        "the new claim is fresh"
    );
    assert_eq!(
        s.begin_idempotent(a, "fresh", "fp").await.unwrap(),
        IdempotencyClaim::InProgress
    );
}

// ── Imported keys ────────────────────────────────────────────────────────

/// The item's error of a batch, unwrapped.
#[track_caller]
fn item_error<T: Debug>(result: StoreResult<T>, at: usize) -> StoreError {
    match result {
        Err(StoreError::InItem {
            list: "keys",
            index,
            source,
        }) if index == at => *source,
        other => panic!("expected an error in keys[{at}], got {other:?}"),
    }
}

async fn keys_issued_elsewhere_are_imported_all_or_none(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    let other = f.tenant("globex").await;
    f.catalog(&t, &["orders:read"]).await;
    let imported = |name: &str, hash_label: &str| NewKey {
        hash_hex: hash(hash_label),
        hint: "sk_live_4f…".into(),
        permissions: vec![perm("orders:read")],
        ..new_key(&t.workspace, name)
    };
    let count = || async {
        s.list_keys(&t.account, &KeyFilter::default(), &page(100, None))
            .await
            .unwrap()
            .items
            .len()
    };
    let before = count().await;

    let keys = s
        .import_keys(
            &t.account,
            &actor(),
            vec![
                imported("legacy a", "legacy-a"),
                imported("legacy b", "legacy-b"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        (keys[0].hint.as_str(), keys[0].status),
        ("sk_live_4f…", KeyStatus::Active)
    );
    let found = s
        .find_key_for_verification(&hash("legacy-b"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.key.id, keys[1].id);
    assert_eq!(found.key.permissions, vec![perm("orders:read")]);
    let events = audit_events(
        s,
        &t.account,
        AuditFilter {
            action: Some("key.imported".into()),
            ..AuditFilter::default()
        },
    )
    .await;
    assert_eq!(
        events
            .iter()
            .map(|e| e.object_id.clone())
            .collect::<Vec<_>>(),
        vec![keys[0].id.clone(), keys[1].id.clone()]
    );

    // A later item's refusal leaves the earlier ones uncreated.
    let refused = s
        .import_keys(
            &t.account,
            &actor(),
            vec![
                imported("legacy c", "legacy-c"),
                imported("legacy a", "legacy-d"),
            ],
        )
        .await;
    assert_conflict::<()>(Err(item_error(refused, 1)), "name");
    assert_eq!(count().await, before + 2, "all or none");
    assert!(
        s.find_key_for_verification(&hash("legacy-c"))
            .await
            .unwrap()
            .is_none()
    );

    // One secret is one key, whichever account holds it and whether it is
    // current or replaced.
    let secret_of_other = f.key(&other, "globex key", |_| {}).await;
    let taken = hash(&format!("{}-globex key", other.workspace));
    let refused = s
        .import_keys(&t.account, &actor(), vec![imported("again", &taken)])
        .await;
    let message = assert_conflict::<()>(Err(item_error(refused, 0)), "hash");
    assert!(
        !message.contains(&secret_of_other.id),
        "another account's key is not named"
    );
    s.rotate_key(
        &t.account,
        &actor(),
        KeyReplacement {
            key_id: keys[0].id.clone(),
            hash_hex: hash("legacy-a rotated"),
            hint: "kw_live_…new".into(),
            public_value: None,
            grace_ms: 60_000,
        },
    )
    .await
    .unwrap();
    let refused = s
        .import_keys(&t.account, &actor(), vec![imported("replaced", "legacy-a")])
        .await;
    assert_conflict::<()>(Err(item_error(refused, 0)), "hash");

    // Other input errors name their item too.
    let mut elsewhere = imported("nowhere", "legacy-e");
    elsewhere.environment = "qa".into();
    let refused = s.import_keys(&t.account, &actor(), vec![elsewhere]).await;
    assert!(matches!(
        item_error(refused, 0),
        StoreError::NotFound {
            field: Some("environment"),
            ..
        }
    ));
    let foreign = NewKey {
        workspace_id: other.workspace.clone(),
        ..imported("into globex", "legacy-f")
    };
    let refused = s.import_keys(&t.account, &actor(), vec![foreign]).await;
    assert!(matches!(
        item_error(refused, 0),
        StoreError::NotFound {
            field: Some("workspace_id"),
            ..
        }
    ));
    assert_eq!(count().await, before + 2);
}

// ── Leaked secrets ───────────────────────────────────────────────────────

fn leak_report(hash_hex: &str) -> LeakReport {
    LeakReport {
        hash_hex: hash_hex.to_owned(),
        reporter: "github".into(),
        location: Some("https://github.com/octo/app/blob/abc/.env".into()),
        found_in: Some("content".into()),
    }
}

async fn leaked_secrets_revoke_or_flag_their_key(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    let other = f.tenant("globex").await;
    let github = Actor {
        ip: Some("140.82.115.1".into()),
        ..Actor::system()
    };

    // A secret key an integration uses is revoked all the same: the
    // secret is anyone's now.
    let used = f.key(&t, "used by an integration", |_| {}).await;
    s.create_integration(
        &t.account,
        &actor(),
        NewIntegration {
            workspace_id: t.workspace.clone(),
            name: "Shopify".into(),
            kind: keyward_core::IntegrationKind::Server,
            key_id: used.id.clone(),
        },
    )
    .await
    .expect("integration");
    let leak = s
        .report_leaked_key(
            &github,
            leak_report(&hash(&format!("{}-used by an integration", t.workspace))),
        )
        .await
        .unwrap()
        .expect("the key is found by its secret's hash");
    assert_eq!(
        (
            leak.account_id.as_str(),
            leak.key_id.as_str(),
            leak.action,
            leak.replaced_secret
        ),
        (
            t.account.as_str(),
            used.id.as_str(),
            LeakAction::Revoked,
            false
        )
    );
    let revoked = s.get_key(&t.account, &used.id).await.unwrap();
    assert_eq!(revoked.status, KeyStatus::Revoked);
    assert_eq!(revoked.leaked_at, Some(leak.reported_at));

    // The workspace's last active ingest key is flagged, not revoked.
    let ingest = f.key(&t, "only ingest", |k| k.kind = KeyKind::Ingest).await;
    let flagged = s
        .report_leaked_key(
            &github,
            leak_report(&hash(&format!("{}-only ingest", t.workspace))),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(flagged.action, LeakAction::Flagged);
    assert!(
        flagged
            .reason
            .as_deref()
            .unwrap()
            .contains("last active ingest key")
    );
    let still = s.get_key(&t.account, &ingest.id).await.unwrap();
    assert_eq!(still.status, KeyStatus::Active);
    assert_eq!(still.leaked_at, Some(flagged.reported_at));

    // Rotating it clears the mark, and the replaced secret's grace period
    // is ended when that secret is the one reported.
    let rotated = s
        .rotate_key(
            &t.account,
            &actor(),
            KeyReplacement {
                key_id: ingest.id.clone(),
                hash_hex: hash("rotated ingest"),
                hint: "kw_live_…new".into(),
                public_value: None,
                grace_ms: 3_600_000,
            },
        )
        .await
        .unwrap();
    assert_eq!(rotated.leaked_at, None, "the new secret was seen nowhere");
    let replaced = s
        .report_leaked_key(
            &github,
            leak_report(&hash(&format!("{}-only ingest", t.workspace))),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (replaced.action, replaced.replaced_secret),
        (LeakAction::GraceEnded, true)
    );
    let ended = s.get_key(&t.account, &ingest.id).await.unwrap();
    assert_eq!(ended.status, KeyStatus::Active);
    assert_eq!(ended.leaked_at, None, "the current secret did not leak");
    assert!(ended.rotation.unwrap().expires_at <= replaced.reported_at);
    let again = s
        .report_leaked_key(
            &github,
            leak_report(&hash(&format!("{}-only ingest", t.workspace))),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.action, LeakAction::None, "that secret works no more");

    // A revoked key's secret reported again: recorded, nothing to do.
    let twice = s
        .report_leaked_key(
            &github,
            leak_report(&hash(&format!("{}-used by an integration", t.workspace))),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(twice.action, LeakAction::None);

    // An unknown secret changes nothing.
    let events_before = audit_events(s, &t.account, AuditFilter::default())
        .await
        .len();
    assert_eq!(
        s.report_leaked_key(&github, leak_report(&hash("nobody's")))
            .await
            .unwrap(),
        None
    );

    // Each report is kept, newest first, and audited with its reporter.
    let reports = s.list_key_leaks(&t.account, &used.id).await.unwrap();
    assert_eq!(reports, vec![twice.clone(), leak.clone()]);
    assert_eq!(
        s.list_key_leaks(&t.account, &ingest.id).await.unwrap(),
        vec![again, replaced, flagged]
    );
    let leaked_events = audit_events(
        s,
        &t.account,
        AuditFilter {
            action: Some("key.leaked".into()),
            ..AuditFilter::default()
        },
    )
    .await;
    assert_eq!(leaked_events.len(), 5);
    assert_eq!(
        audit_events(s, &t.account, AuditFilter::default())
            .await
            .len(),
        events_before,
        "an unknown secret is not audited"
    );
    let first = &leaked_events[0];
    assert_eq!(
        (first.object_id.as_str(), &first.actor),
        (used.id.as_str(), &github)
    );
    assert_eq!(
        first.after.as_ref().unwrap(),
        &json!({
            "reporter": "github",
            "location": "https://github.com/octo/app/blob/abc/.env",
            "found_in": "content",
            "secret": "current",
            "action": "revoked",
            "reason": null,
        })
    );
    let revocations = audit_events(
        s,
        &t.account,
        AuditFilter {
            action: Some("key.revoked".into()),
            ..AuditFilter::default()
        },
    )
    .await;
    assert_eq!(revocations.len(), 1, "the revocation is audited as such");

    // Another account sees neither the reports nor the key.
    assert_not_found(
        s.list_key_leaks(&other.account, &used.id).await,
        "key",
        None,
    );
    assert!(
        audit_events(s, &other.account, AuditFilter::default())
            .await
            .iter()
            .all(|e| e.action != "key.leaked")
    );

    // A management token's leaked secret deletes the token.
    let token_id = t.boot.token.id.clone();
    let gone = s
        .report_leaked_token(&github, leak_report(&hash("acme-bootstrap-token")))
        .await
        .unwrap();
    assert_eq!(
        gone,
        Some(LeakedToken {
            account_id: t.account.clone(),
            token_id: token_id.clone(),
        })
    );
    assert_not_found(
        s.get_management_token(&t.account, &token_id).await,
        "management token",
        None,
    );
    let token_events = audit_events(
        s,
        &t.account,
        AuditFilter {
            action: Some("management_token.leaked".into()),
            ..AuditFilter::default()
        },
    )
    .await;
    assert_eq!(token_events.len(), 1);
    assert_eq!(token_events[0].after.as_ref().unwrap()["action"], "deleted");
    assert_eq!(
        s.report_leaked_token(&github, leak_report(&hash("acme-bootstrap-token")))
            .await
            .unwrap(),
        None,
        "a deleted token is not found again"
    );
    assert!(
        s.find_token_by_hash(&hash("globex-bootstrap-token"))
            .await
            .unwrap()
            .is_some(),
        "another account's token stays"
    );

    // Deleting the key takes its reports with it.
    s.delete_key(
        &t.account,
        &actor(),
        KeyDeletion {
            key_id: used.id.clone(),
            confirm_name: used.name.clone(),
            force: true,
        },
    )
    .await
    .unwrap();
    assert_not_found(s.list_key_leaks(&t.account, &used.id).await, "key", None);
}

// ── Audit log ────────────────────────────────────────────────────────────

async fn audit_events(
    store: &Arc<dyn Store>,
    account: &str,
    filter: AuditFilter,
) -> Vec<AuditEvent> {
    audit_events_in(store, account, filter, ListOrder::OldestFirst).await
}

/// Every page, two events at a time, so that each cursor is followed.
async fn audit_events_in(
    store: &Arc<dyn Store>,
    account: &str,
    filter: AuditFilter,
    order: ListOrder,
) -> Vec<AuditEvent> {
    all_pages(2, |page| {
        let (store, filter) = (store.clone(), filter.clone());
        async move {
            store
                .list_audit_events(account, &filter, order, &page)
                .await
        }
    })
    .await
    .concat()
}

async fn every_change_is_audited_in_its_account(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    let other = f.tenant("globex").await;
    f.catalog(&t, &["customers:read"]).await;
    let key = f.key(&t, "Main Website Integration", |_| {}).await;
    s.update_key(
        &t.account,
        &actor(),
        &key.id,
        KeyPatch {
            name: Some("Renamed".into()),
            permissions: Some(vec![perm("customers:read")]),
            ..KeyPatch::default()
        },
    )
    .await
    .unwrap();
    s.set_key_status(&t.account, &actor(), &key.id, KeyStatus::Inactive)
        .await
        .unwrap();
    // A refused change leaves no event: it rolls back with the change.
    let taken = f.key(&t, "Taken", |_| {}).await;
    assert_conflict(
        s.update_key(
            &t.account,
            &actor(),
            &taken.id,
            KeyPatch {
                name: Some("Renamed".into()),
                ..KeyPatch::default()
            },
        )
        .await,
        "name",
    );
    s.delete_workspace(&t.account, &actor(), &t.workspace)
        .await
        .unwrap();

    let events = audit_events(s, &t.account, AuditFilter::default()).await;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "account.created",
            "permission.created",
            "key.created",
            "key.updated",
            "key.disabled",
            "key.created",
            "workspace.deleted",
        ]
    );
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert!(events.iter().all(|e| e.account_id == t.account));
    let owner = Actor {
        member_id: Some(t.boot.owner.id.clone()),
        ..Actor::system()
    };
    assert_eq!(events[0].actor, owner);
    assert_eq!(events[0].object_id, t.account);
    assert!(events[1..].iter().all(|e| e.actor == actor()));

    // An update records only what changed; nothing records a hash.
    let updated = &events[3];
    assert_eq!(
        (updated.object_type.as_str(), updated.object_id.as_str()),
        ("key", key.id.as_str())
    );
    assert_eq!(
        updated.before,
        Some(json!({"name": "Main Website Integration", "permissions": []}))
    );
    assert_eq!(
        updated.after,
        Some(json!({"name": "Renamed", "permissions": ["customers:read"]}))
    );
    assert_eq!(events[4].after, Some(json!({"status": "inactive"})));
    let created = events[2].after.as_ref().expect("created state");
    assert_eq!(created["hint"], json!(key.hint));
    for event in &events {
        let text = format!("{:?} {:?}", event.before, event.after);
        assert!(
            !text.contains(&hash(&format!("{}-{}", t.workspace, key.name))),
            "{text}"
        );
        assert!(!text.contains("hash"), "{text}");
    }
    // The workspace's history stays after it is gone.
    assert_eq!(events[6].before, Some(json!({"name": "Main"})));

    // Filters.
    let by_object = AuditFilter {
        object_id: Some(key.id.clone()),
        ..AuditFilter::default()
    };
    assert_eq!(audit_events(s, &t.account, by_object).await.len(), 3);
    let by_action = AuditFilter {
        action: Some("key.created".into()),
        ..AuditFilter::default()
    };
    assert_eq!(
        audit_events(s, &t.account, by_action.clone()).await.len(),
        2
    );

    // Newest first: the same events backwards, page after page, filtered
    // the same way.
    let newest_first = audit_events_in(
        s,
        &t.account,
        AuditFilter::default(),
        ListOrder::NewestFirst,
    )
    .await;
    let mut backwards = events.clone();
    backwards.reverse();
    assert_eq!(newest_first, backwards);
    let keys_created = audit_events_in(s, &t.account, by_action, ListOrder::NewestFirst).await;
    assert_eq!(
        keys_created.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [6, 3]
    );
    let by_actor = AuditFilter {
        actor_member_id: Some(t.boot.owner.id.clone()),
        ..AuditFilter::default()
    };
    assert_eq!(audit_events(s, &t.account, by_actor).await, events[..1]);
    let window = AuditFilter {
        from: Some(events[2].at),
        to: Some(events[6].at + 1),
        ..AuditFilter::default()
    };
    let in_window = audit_events(s, &t.account, window).await;
    assert!(
        in_window.len() >= 5 && in_window.iter().all(|e| e.seq >= 2),
        "{in_window:?}"
    );
    let empty = AuditFilter {
        to: Some(events[0].at),
        ..AuditFilter::default()
    };
    assert!(audit_events(s, &t.account, empty).await.is_empty());

    // The other account has its own chain and sees none of these.
    let theirs = audit_events(s, &other.account, AuditFilter::default()).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].action, "account.created");
    assert_eq!(theirs[0].object_id, other.account);
    let foreign = AuditFilter {
        object_id: Some(key.id.clone()),
        ..AuditFilter::default()
    };
    assert!(audit_events(s, &other.account, foreign).await.is_empty());
    let mut accounts = s.list_account_ids().await.unwrap();
    accounts.sort();
    let mut expected = vec![t.account.clone(), other.account.clone()];
    expected.sort();
    assert_eq!(accounts, expected);
}

async fn audit_chain_detects_tampering(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    let other = f.tenant("globex").await;
    let key = f.key(&t, "k", |_| {}).await;
    for status in [KeyStatus::Inactive, KeyStatus::Active, KeyStatus::Inactive] {
        s.set_key_status(&t.account, &actor(), &key.id, status)
            .await
            .unwrap();
    }
    let events = audit_events(s, &t.account, AuditFilter::default()).await;
    assert_eq!(events.len(), 5);
    let intact = s.verify_audit_chain(&t.account, Some(3)).await.unwrap();
    assert_eq!((intact.events, intact.broken), (5, None));
    let link = |event: &AuditEvent| ChainLink {
        seq: event.seq,
        hash: event.hash.clone(),
    };
    assert_eq!(intact.head, Some(link(&events[4])));
    assert_eq!(intact.checkpoint, Some(link(&events[2])));

    // An edited row is named, with the reason.
    let edited = &events[2];
    f.raw_sql(&format!(
        "UPDATE audit_events SET after_state = '{{\"status\":\"active\"}}' WHERE id = '{}'",
        edited.id
    ))
    .await;
    let report = s.verify_audit_chain(&t.account, None).await.unwrap();
    let broken = report.broken.expect("edit detected");
    assert_eq!(
        (broken.seq, broken.event_id.as_str()),
        (3, edited.id.as_str())
    );
    assert!(broken.reason.contains("changed"), "{}", broken.reason);
    assert_eq!(report.events, 3);
    assert_eq!(
        report.head,
        Some(link(&events[1])),
        "the last event that held"
    );
    // Another account's chain is unaffected.
    assert_eq!(
        s.verify_audit_chain(&other.account, None)
            .await
            .unwrap()
            .broken,
        None
    );

    // Putting the exact value back restores the chain: the hash is of the
    // content, whatever the text's key order.
    f.raw_sql(&format!(
        "UPDATE audit_events SET after_state = '{{\"status\":\"inactive\"}}' WHERE id = '{}'",
        edited.id
    ))
    .await;
    assert_eq!(
        s.verify_audit_chain(&t.account, None).await.unwrap().broken,
        None
    );

    // Removing the newest event leaves a chain that holds: only a link
    // recorded earlier shows it, by a head short of it.
    f.raw_sql(&format!(
        "DELETE FROM audit_events WHERE id = '{}'",
        events[4].id
    ))
    .await;
    let cut = s.verify_audit_chain(&t.account, Some(5)).await.unwrap();
    assert_eq!((cut.broken, cut.checkpoint), (None, None));
    assert_eq!(cut.head, Some(link(&events[3])));

    // A deleted middle row breaks the link at the next event.
    f.raw_sql(&format!(
        "DELETE FROM audit_events WHERE id = '{}'",
        events[1].id
    ))
    .await;
    let broken = s
        .verify_audit_chain(&t.account, None)
        .await
        .unwrap()
        .broken
        .expect("deletion detected");
    assert_eq!(
        (broken.seq, broken.event_id.as_str()),
        (3, events[2].id.as_str())
    );
    assert!(broken.reason.contains("missing"), "{}", broken.reason);
}

// ── Concurrency and integrity ────────────────────────────────────────────

async fn concurrent_writers_all_succeed(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let t = f.tenant("acme").await;
    f.catalog(&t, &["customers:read"]).await;

    let creates = (0..20).map(|i| {
        let (s, account, workspace) = (f.store.clone(), t.account.clone(), t.workspace.clone());
        tokio::spawn(async move {
            let new = NewKey {
                permissions: vec![perm("customers:read")],
                ..new_key(&workspace, &format!("concurrent {i:02}"))
            };
            s.create_key(&account, &actor(), new).await
        })
    });
    let claims = (0..10).map(|_| {
        let (s, account) = (f.store.clone(), t.account.clone());
        tokio::spawn(async move { s.begin_idempotent(&account, "same", "fp").await })
    });
    let creates: Vec<_> = creates.collect();
    let claims: Vec<_> = claims.collect();
    for handle in creates {
        handle
            .await
            .expect("task")
            .expect("concurrent create succeeds");
    }
    let mut outcomes = Vec::new();
    for handle in claims {
        outcomes.push(
            handle
                .await
                .expect("task")
                .expect("concurrent claim succeeds"),
        );
    }
    let keys = f
        .store
        .list_keys(&t.account, &KeyFilter::default(), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(keys.items.len(), 20);
    let claimed = outcomes
        .iter()
        .filter(|o| **o == IdempotencyClaim::Claimed)
        .count();
    assert_eq!(claimed, 1, "exactly one request claims a key: {outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, IdempotencyClaim::Claimed | IdempotencyClaim::InProgress))
    );

    // Racing creates of one name: one wins, the others conflict.
    let racers = (0..8).map(|i| {
        let (s, account, workspace) = (f.store.clone(), t.account.clone(), t.workspace.clone());
        tokio::spawn(async move {
            let new = NewKey {
                hash_hex: hash(&format!("racer-{i}")),
                ..new_key(&workspace, "contested")
            };
            s.create_key(&account, &actor(), new).await
        })
    });
    let mut won = 0;
    for handle in racers.collect::<Vec<_>>() {
        match handle.await.expect("task") {
            Ok(_) => won += 1,
            Err(e) => assert!(
                matches!(e, StoreError::Conflict { field: "name", .. }),
                "{e:?}"
            ),
        }
    }
    assert_eq!(won, 1);

    // Every committed change appended one event, none forked the chain:
    // account, permission, 20 keys, the contested key.
    let report = f.store.verify_audit_chain(&t.account, None).await.unwrap();
    assert_eq!((report.events, report.broken), (23, None));
}

async fn corrupt_rows_are_reported(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    let key = f.key(&t, "k", |_| {}).await;
    f.raw_sql(&format!(
        "UPDATE api_keys SET status = 'bogus' WHERE id = '{}'",
        key.id
    ))
    .await;
    assert!(
        matches!(s.get_key(&t.account, &key.id).await, Err(StoreError::Corrupt(m)) if m.contains("status"))
    );
    f.raw_sql(&format!(
        "UPDATE api_keys SET status = 'active', meta = '[1]' WHERE id = '{}'",
        key.id
    ))
    .await;
    assert!(
        matches!(s.get_key(&t.account, &key.id).await, Err(StoreError::Corrupt(m)) if m.contains("meta"))
    );
    f.raw_sql(&format!(
        "UPDATE api_keys SET meta = '{{}}', rate_limit_limit = 5 WHERE id = '{}'",
        key.id
    ))
    .await;
    assert!(
        matches!(s.get_key(&t.account, &key.id).await, Err(StoreError::Corrupt(m)) if m.contains("rate_limit"))
    );
}

async fn reports_its_backend(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let expected = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(f.store.backend(), expected);
    f.store.ping().await.unwrap();
    // Opening again (migrations already applied) sees the same data.
    f.tenant("acme").await;
    let again = f.db.open_store().await;
    assert_eq!(again.count_accounts().await.unwrap(), 1);
}

async fn console_sessions_and_invitations(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let acme = f.tenant("acme").await;
    let other = f.tenant("other").await;
    let owner = &acme.boot.owner;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;

    // Signing in finds the user and their memberships, not the password's
    // owner by account.
    let user = f
        .store
        .find_user_for_sign_in("owner@acme.example")
        .await
        .unwrap()
        .expect("user");
    assert!(user.password_hash.is_some());
    assert_eq!(user.memberships.len(), 1);
    assert_eq!(user.memberships[0].account_id, acme.account);
    assert!(!format!("{user:?}").contains("argon2"), "hash in Debug");
    assert!(
        f.store
            .find_user_for_sign_in("nobody@acme.example")
            .await
            .unwrap()
            .is_none()
    );

    // A session is found by its hash until it expires or is ended.
    let new_session = |label: &str, expires_at| NewSession {
        member_id: owner.id.clone(),
        hash_hex: hash(label),
        expires_at,
        ip: Some("127.0.0.1".into()),
        user_agent: Some("test".into()),
    };
    let live = f
        .store
        .create_session(&acme.account, &actor(), new_session("live", now + 60_000))
        .await
        .unwrap();
    let found = f.store.find_session(&hash("live"), now).await.unwrap();
    let found = found.expect("live session");
    assert_eq!(found.session, live);
    assert_eq!(found.member.id, owner.id);
    assert!(
        f.store
            .find_session(&hash("live"), now + 60_000)
            .await
            .unwrap()
            .is_none(),
        "expired at expires_at"
    );
    // Another account's member cannot be given a session in this account.
    let foreign = NewSession {
        member_id: other.boot.owner.id.clone(),
        ..new_session("foreign", now + 60_000)
    };
    assert!(matches!(
        f.store
            .create_session(&acme.account, &actor(), foreign)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    f.store.delete_session(&hash("live")).await.unwrap();
    assert!(
        f.store
            .find_session(&hash("live"), now)
            .await
            .unwrap()
            .is_none()
    );
    f.store.delete_session(&hash("live")).await.unwrap(); // ended twice: fine

    // An invited member sets a password once through their invitation.
    let invite = |email: &str, label: &str| {
        let store = f.store.clone();
        let (account, email, label) = (acme.account.clone(), email.to_owned(), label.to_owned());
        async move {
            store
                .invite_member(
                    &account,
                    &actor(),
                    NewMember {
                        email,
                        role: Role::Member,
                        permissions: vec![AccountPermission::ManageApiCredentials],
                    },
                    NewInvitation {
                        hash_hex: hash(&label),
                        expires_at: now + 60_000,
                    },
                )
                .await
                .unwrap()
        }
    };
    let (invited, invitation) = invite("new@acme.example", "inv1").await;
    assert_eq!(invitation.unwrap().member_id, invited.id);
    let accept = |label: &'static str, at: i64| {
        let store = f.store.clone();
        async move {
            store
                .accept_invitation(&hash(label), "$argon2id$new", at)
                .await
        }
    };
    assert!(accept("unknown", now).await.unwrap().is_none());
    assert!(
        accept("inv1", now + 60_000).await.unwrap().is_none(),
        "expired"
    );
    let (late, _) = invite("late@acme.example", "inv2").await;
    let member = accept("inv2", now).await.unwrap().expect("accepted");
    assert_eq!(member.id, late.id);
    assert!(accept("inv2", now).await.unwrap().is_none(), "used once");
    let user = f
        .store
        .find_user_for_sign_in("late@acme.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.password_hash.as_deref(), Some("$argon2id$new"));
    // Someone who already has a password (here: another account's owner)
    // gets no invitation: they sign in as they are.
    let (_, none) = invite("owner@other.example", "inv3").await;
    assert!(none.is_none());
    let invited = late;

    // Removing a member ends their sessions.
    let session = NewSession {
        member_id: invited.id.clone(),
        ..new_session("member", now + 60_000)
    };
    f.store
        .create_session(&acme.account, &actor(), session)
        .await
        .unwrap();
    assert!(
        f.store
            .find_session(&hash("member"), now)
            .await
            .unwrap()
            .is_some()
    );
    f.store
        .delete_member(&acme.account, &actor(), &invited.id)
        .await
        .unwrap();
    assert!(
        f.store
            .find_session(&hash("member"), now)
            .await
            .unwrap()
            .is_none()
    );
    let actions: BTreeSet<String> = audit_events(&f.store, &acme.account, AuditFilter::default())
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    for action in [
        "session.created",
        "session.ended",
        "invitation.created",
        "invitation.accepted",
    ] {
        assert!(actions.contains(action), "{action} not audited");
    }
}

// ── Request logs ─────────────────────────────────────────────────────────

/// Every request log of `account` matching `filter`, newest first, read in
/// pages of 100.
async fn request_logs(
    store: &Arc<dyn Store>,
    account: &str,
    filter: RequestLogFilter,
) -> Vec<RequestLog> {
    all_pages(100, |page| {
        let (store, filter) = (store.clone(), filter.clone());
        async move { store.list_request_logs(account, &filter, &page).await }
    })
    .await
    .concat()
}

/// A batch longer than any one statement on either backend, with every
/// column's awkward values (NULLs, extreme integers, quotes, backslashes,
/// control characters, non-ASCII), lands whole and reads back exactly:
/// same columns, ids `log_<ulid>` increasing in entry order, pages newest
/// first; filters, account scoping and the purge see what they should.
async fn request_logs_round_trip_filter_and_purge(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let awkward = [
        "customers:read",
        "quote\" back\\slash",
        "ünïcødé ✓ 🔑",
        "tab\tnew\nline\u{1}",
        "",
    ];
    let entry = |account: &str, n: usize| NewRequestLog {
        account_id: account.to_owned(),
        at: match n {
            0 => i64::MIN,
            1 => i64::MAX,
            n => 1_700_000_000_000 + n as i64,
        },
        key_id: (!n.is_multiple_of(7)).then(|| format!("key_{}", n % 5)),
        workspace_id: (!n.is_multiple_of(7)).then(|| format!("ws_{}", n % 3)),
        environment: (!n.is_multiple_of(11)).then(|| ["production", "staging"][n % 2].to_owned()),
        client_ip: match n % 4 {
            0 => None,
            1 => "203.0.113.7".parse().ok(),
            2 => "2001:db8::1".parse().ok(),
            _ => "::ffff:198.51.100.1".parse().ok(),
        },
        permissions: awkward[..n % 4].iter().map(|p| p.to_string()).collect(),
        code: ["valid", "unknown_key", "rate_limited"][n % 3].to_owned(),
        latency_us: match n {
            2 => 0,
            3 => i64::MAX,
            4 => i64::MIN,
            n => n as i64 * 17,
        },
        method: n
            .is_multiple_of(3)
            .then(|| ["GET", "DELETE"][n % 2].to_owned()),
        path: n
            .is_multiple_of(3)
            .then(|| format!("/orders/{}", awkward[n % awkward.len()])),
    };
    let acme: Vec<_> = (0..1_300).map(|n| entry("acct_acme", n)).collect();
    let other: Vec<_> = (0..7).map(|n| entry("acct_other", n)).collect();
    let none: [NewRequestLog; 0] = [];
    for batch in [&none[..], &acme, &other] {
        let batch = batch.iter().collect();
        f.store.insert_request_logs(&batch).await.unwrap();
    }

    let listed = request_logs(&f.store, "acct_acme", RequestLogFilter::default()).await;
    let newest_first: Vec<_> = acme.iter().rev().cloned().collect();
    assert_eq!(
        listed
            .iter()
            .map(|log| log.entry.clone())
            .collect::<Vec<_>>(),
        newest_first
    );
    for log in &listed {
        let ulid = log.id.strip_prefix("log_").expect("log_ prefix");
        assert_eq!(ulid.len(), 26, "{}", log.id);
        assert_eq!(ulid, ulid.to_ascii_lowercase());
    }
    assert!(listed.windows(2).all(|w| w[0].id > w[1].id), "ids decrease");
    let later = request_logs(&f.store, "acct_other", RequestLogFilter::default()).await;
    assert_eq!(later.len(), 7);
    assert!(
        later.last().unwrap().id > listed[0].id,
        "a later batch sorts later"
    );

    // Each filter alone and together, against the same filter in Rust.
    let filters = [
        RequestLogFilter {
            key_id: Some("key_3".into()),
            ..RequestLogFilter::default()
        },
        RequestLogFilter {
            workspace_id: Some("ws_1".into()),
            ..RequestLogFilter::default()
        },
        RequestLogFilter {
            code: Some("rate_limited".into()),
            environment: Some("staging".into()),
            ..RequestLogFilter::default()
        },
        RequestLogFilter {
            from: Some(1_700_000_000_100),
            to: Some(1_700_000_000_900),
            ..RequestLogFilter::default()
        },
        RequestLogFilter {
            key_id: Some("key_1".into()),
            workspace_id: Some("ws_2".into()),
            code: Some("rate_limited".into()),
            from: Some(1_700_000_000_200),
            ..RequestLogFilter::default()
        },
    ];
    for filter in filters {
        let matches = |e: &NewRequestLog| {
            let text = |want: &Option<String>, have: &Option<String>| {
                want.is_none() || want.as_deref() == have.as_deref()
            };
            text(&filter.key_id, &e.key_id)
                && text(&filter.workspace_id, &e.workspace_id)
                && filter.code.as_ref().is_none_or(|c| *c == e.code)
                && text(&filter.environment, &e.environment)
                && filter.from.is_none_or(|from| e.at >= from)
                && filter.to.is_none_or(|to| e.at < to)
        };
        let expected: Vec<_> = newest_first
            .iter()
            .filter(|e| matches(e))
            .cloned()
            .collect();
        assert!(!expected.is_empty(), "{filter:?} selects something");
        let got = request_logs(&f.store, "acct_acme", filter.clone()).await;
        let got: Vec<_> = got.into_iter().map(|log| log.entry).collect();
        assert_eq!(got, expected, "{filter:?}");
    }

    // Another account's logs are out of reach, even by key id.
    let key_3 = RequestLogFilter {
        key_id: Some("key_3".into()),
        ..RequestLogFilter::default()
    };
    assert!(
        request_logs(&f.store, "acct_nobody", key_3)
            .await
            .is_empty()
    );

    // The purge deletes across accounts, strictly before the cut-off.
    let cut_off = 1_700_000_000_500;
    let older = acme.iter().chain(&other).filter(|e| e.at < cut_off).count();
    assert_eq!(
        f.store.purge_request_logs(cut_off).await.unwrap(),
        older as u64
    );
    let kept = request_logs(&f.store, "acct_acme", RequestLogFilter::default()).await;
    let expected: Vec<_> = newest_first
        .iter()
        .filter(|e| e.at >= cut_off)
        .cloned()
        .collect();
    assert_eq!(
        kept.into_iter().map(|log| log.entry).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(f.store.purge_request_logs(cut_off).await.unwrap(), 0);
}

/// Batches larger than a block, one key's entries interleaved with
/// others': every page size walks them newest first without a gap or a
/// repeat, a key's pages too; and a purge cutting through a batch keeps
/// the newer entries under the ids they had.
async fn request_logs_page_across_blocks_and_batches(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let entry = |n: usize| NewRequestLog {
        account_id: "acct_acme".into(),
        at: 1_700_000_000_000 + n as i64,
        key_id: Some(if n % 10 == 3 { "key_cold" } else { "key_hot" }.into()),
        workspace_id: Some("ws_1".into()),
        environment: Some("production".into()),
        client_ip: None,
        permissions: vec![],
        code: if n.is_multiple_of(4) {
            "rate_limited"
        } else {
            "valid"
        }
        .into(),
        latency_us: n as i64,
        method: None,
        path: None,
    };
    let batches = [0..2_600, 2_600..2_601, 2_601..4_700];
    for batch in batches {
        let entries: Vec<_> = batch.map(entry).collect();
        f.store
            .insert_request_logs(&entries.iter().collect())
            .await
            .unwrap();
    }
    let newest_first: Vec<_> = (0..4_700).rev().map(entry).collect();
    let listed = |filter: RequestLogFilter, size: u32| {
        let store = f.store.clone();
        async move {
            all_pages(size, |page| {
                let (store, filter) = (store.clone(), filter.clone());
                async move { store.list_request_logs("acct_acme", &filter, &page).await }
            })
            .await
            .concat()
        }
    };
    let mut ids_of_each_size = Vec::new();
    for size in [9, 100] {
        let logs = listed(RequestLogFilter::default(), size).await;
        let entries: Vec<_> = logs.iter().map(|log| log.entry.clone()).collect();
        assert_eq!(entries, newest_first, "pages of {size}");
        assert!(
            logs.windows(2).all(|w| w[0].id > w[1].id),
            "pages of {size}"
        );
        ids_of_each_size.push(logs.into_iter().map(|log| log.id).collect::<Vec<_>>());
    }
    assert_eq!(ids_of_each_size[0], ids_of_each_size[1], "one id per log");
    let ids = &ids_of_each_size[1];
    for (key, code) in [("key_cold", None), ("key_hot", Some("rate_limited"))] {
        let filter = RequestLogFilter {
            key_id: Some(key.into()),
            code: code.map(str::to_owned),
            ..RequestLogFilter::default()
        };
        let expected: Vec<_> = newest_first
            .iter()
            .filter(|e| e.key_id.as_deref() == Some(key))
            .filter(|e| code.is_none_or(|c| e.code == c))
            .cloned()
            .collect();
        let got = listed(filter, 100).await;
        assert_eq!(
            got.into_iter().map(|l| l.entry).collect::<Vec<_>>(),
            expected
        );
    }

    let cut_off = 1_700_000_000_000 + 1_500;
    assert_eq!(f.store.purge_request_logs(cut_off).await.unwrap(), 1_500);
    let kept = listed(RequestLogFilter::default(), 100).await;
    let kept_ids: Vec<_> = kept.iter().map(|log| log.id.clone()).collect();
    assert_eq!(kept_ids, ids[..4_700 - 1_500]);
    let kept: Vec<_> = kept.into_iter().map(|log| log.entry).collect();
    assert_eq!(kept, newest_first[..4_700 - 1_500]);
}

/// Credits are drawn in one atomic step: concurrent draws never take more
/// than there is, a refill due is applied by the draw that finds it, and
/// only the account's own key is ever touched.
const DAY_MS: i64 = 86_400_000;

async fn credits_are_drawn_exactly_and_refilled(backend: Backend) {
    let Some(f) = Fixture::new(backend).await else {
        return;
    };
    let s = &f.store;
    let t = f.tenant("acme").await;
    let other = f.tenant("globex").await;
    let metered = f
        .key(&t, "metered", |k| {
            k.credits = Some(CreditSetting {
                remaining: 25,
                refill: None,
            })
        })
        .await;
    let credits = metered.credits.expect("created metered");
    // When the draws happen: no refill is set until the last part.
    let now = credits.refilled_at;
    assert_eq!((credits.remaining, credits.refill), (25, None));
    let read = s.get_key(&t.account, &metered.id).await.unwrap();
    assert_eq!(read.credits.map(|c| c.remaining), Some(25));
    let found = s
        .find_key_for_verification(&hash(&format!("{}-metered", t.workspace)))
        .await
        .unwrap()
        .expect("found by hash");
    assert_eq!(found.key.credits, read.credits);

    // 40 concurrent draws of 1 on a balance of 25, interleaved with 40 on
    // another key's 7 (on SQLite they commit in shared batches): exactly
    // 25 and 7 succeed, and each success sees its own balance left.
    let second = f
        .key(&t, "metered-second", |k| {
            k.credits = Some(CreditSetting {
                remaining: 7,
                refill: None,
            })
        })
        .await;
    // Draws whose callers give up, the ones running a batch included, do
    // not fail the others.
    let patient = f
        .key(&t, "metered-patient", |k| {
            k.credits = Some(CreditSetting {
                remaining: 1_000,
                refill: None,
            })
        })
        .await;
    // Rounds that give up at different points, so that some of them leave
    // while running a batch.
    for round in 0..12 {
        let mut draws = Vec::new();
        for _ in 0..20 {
            let s = s.clone();
            let (account, id) = (t.account.clone(), patient.id.clone());
            draws.push(tokio::spawn(async move {
                s.draw_credits(&account, &id, 1, now).await
            }));
        }
        for _ in 0..round % 4 {
            tokio::task::yield_now().await;
        }
        for (i, draw) in draws.into_iter().enumerate() {
            if i % 2 == 0 {
                draw.abort();
            } else {
                let draw = draw.await.unwrap().expect("no failure").expect("metered");
                assert!(draw.allowed);
            }
        }
    }

    // Another account's draws on the key, in the same batches, find nothing.
    let mut draws = tokio::task::JoinSet::new();
    for _ in 0..40 {
        for (account, id) in [
            (&t.account, &metered.id),
            (&t.account, &second.id),
            (&other.account, &metered.id),
        ] {
            let s = s.clone();
            let (account, id) = (account.clone(), id.clone());
            draws.spawn(async move {
                let draw = s.draw_credits(&account, &id, 1, now).await;
                (account, id, draw)
            });
        }
    }
    let mut left_after = std::collections::HashMap::<String, Vec<u64>>::new();
    while let Some(joined) = draws.join_next().await {
        let (account, id, draw) = joined.unwrap();
        let draw = draw.unwrap();
        if account == other.account {
            assert_eq!(draw, None, "another account's key");
            continue;
        }
        let draw = draw.expect("metered");
        if draw.allowed {
            left_after.entry(id).or_default().push(draw.remaining);
        }
    }
    for (id, balance) in [(&metered.id, 25), (&second.id, 7)] {
        let mut left = left_after.remove(id).unwrap_or_default();
        left.sort_unstable();
        assert_eq!(left, (0..balance).collect::<Vec<u64>>(), "{id}");
    }
    let spent = s
        .draw_credits(&t.account, &metered.id, 0, now)
        .await
        .unwrap();
    assert_eq!(
        spent,
        Some(CreditDraw {
            allowed: false,
            remaining: 0
        }),
        "a cost of 0 asks whether anything is left"
    );

    // Topped up; a cost above the balance takes nothing.
    let topped = s
        .change_credits(&t.account, &actor(), &metered.id, CreditChange::Add(10))
        .await
        .unwrap();
    assert_eq!(topped.credits.map(|c| c.remaining), Some(10));
    let too_dear = s
        .draw_credits(&t.account, &metered.id, 11, now)
        .await
        .unwrap();
    assert_eq!(
        too_dear,
        Some(CreditDraw {
            allowed: false,
            remaining: 10
        })
    );
    let exact = s
        .draw_credits(&t.account, &metered.id, 10, now)
        .await
        .unwrap();
    assert_eq!(
        exact,
        Some(CreditDraw {
            allowed: true,
            remaining: 0
        })
    );
    let floored = s
        .change_credits(&t.account, &actor(), &metered.id, CreditChange::Add(-5))
        .await
        .unwrap();
    assert_eq!(
        floored.credits.map(|c| c.remaining),
        Some(0),
        "never below 0"
    );
    s.change_credits(&t.account, &actor(), &metered.id, CreditChange::Set(7))
        .await
        .unwrap();
    let changes = audit_events(
        s,
        &t.account,
        AuditFilter {
            action: Some("key.credits_changed".into()),
            ..AuditFilter::default()
        },
    )
    .await;
    let balances: Vec<_> = changes
        .iter()
        .map(|e| (e.before.clone().unwrap(), e.after.clone().unwrap()))
        .collect();
    assert_eq!(
        balances,
        [
            (json!({"remaining": 0}), json!({"remaining": 10})),
            (json!({"remaining": 0}), json!({"remaining": 0})),
            (json!({"remaining": 0}), json!({"remaining": 7})),
        ]
    );

    // A refill: the draw that finds a period begun since the last refill
    // starts from the refill amount, once.
    let refill = CreditRefill {
        interval: RefillInterval::Daily,
        amount: 3,
        day: None,
    };
    let refilled = s
        .update_key(
            &t.account,
            &actor(),
            &metered.id,
            KeyPatch {
                credits: Some(Some(CreditSetting {
                    remaining: 0,
                    refill: Some(refill),
                })),
                ..KeyPatch::default()
            },
        )
        .await
        .unwrap()
        .credits
        .expect("still metered");
    // A draw a day later is in the next period.
    let next_period = refilled.refilled_at + DAY_MS;
    let first = s
        .draw_credits(&t.account, &metered.id, 1, next_period)
        .await
        .unwrap();
    assert_eq!(
        first,
        Some(CreditDraw {
            allowed: true,
            remaining: 2
        })
    );
    let second = s
        .draw_credits(&t.account, &metered.id, 1, next_period)
        .await
        .unwrap();
    assert_eq!(
        second,
        Some(CreditDraw {
            allowed: true,
            remaining: 1
        }),
        "refilled once per period"
    );
    let empty_refill = s
        .draw_credits(&t.account, &metered.id, 5, next_period + DAY_MS)
        .await
        .unwrap();
    assert_eq!(
        empty_refill,
        Some(CreditDraw {
            allowed: false,
            remaining: 3
        }),
        "a refusal reports the refilled balance"
    );

    // Another account can neither draw on nor change the key.
    assert_eq!(
        s.draw_credits(&other.account, &metered.id, 1, now)
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        s.change_credits(&other.account, &actor(), &metered.id, CreditChange::Set(99))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        s.get_key(&t.account, &metered.id)
            .await
            .unwrap()
            .credits
            .map(|c| c.remaining),
        Some(3),
        "untouched by the other account (the refusal above kept its refill)"
    );

    // Unmetered keys: nothing to draw, nothing to change.
    let plain = f.key(&t, "plain", |_| {}).await;
    assert_eq!(plain.credits, None);
    assert_eq!(
        s.draw_credits(&t.account, &plain.id, 1, now).await.unwrap(),
        None
    );
    assert!(matches!(
        s.change_credits(&t.account, &actor(), &plain.id, CreditChange::Add(1))
            .await,
        Err(StoreError::Conflict { .. })
    ));

    // Metering stops on `null`, and the balance goes with the key.
    let unmetered = s
        .update_key(
            &t.account,
            &actor(),
            &metered.id,
            KeyPatch {
                credits: Some(None),
                ..KeyPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(unmetered.credits, None);
    assert_eq!(
        s.draw_credits(&t.account, &metered.id, 1, now)
            .await
            .unwrap(),
        None
    );
    let doomed = f
        .key(&t, "doomed", |k| {
            k.credits = Some(CreditSetting {
                remaining: 1,
                refill: Some(refill),
            })
        })
        .await;
    s.delete_key(
        &t.account,
        &actor(),
        KeyDeletion {
            key_id: doomed.id.clone(),
            confirm_name: "doomed".into(),
            force: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        s.draw_credits(&t.account, &doomed.id, 1, now)
            .await
            .unwrap(),
        None
    );
}

// ── One test per backend ─────────────────────────────────────────────────

macro_rules! conformance_suite {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(keyward_store::testing::Backend::Sqlite).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(keyward_store::testing::Backend::Postgres).await
                }
            )+
        }
    };
}

conformance_suite!(
    bootstrap_creates_everything,
    members_and_tokens,
    accounts_cannot_reach_each_other,
    workspaces_and_environments,
    permission_catalog,
    key_round_trip,
    key_rules_on_create,
    list_keys_filters_and_pages,
    page_size_defaults_and_clamps,
    update_key_fields,
    key_status_and_revocation,
    leaked_secrets_revoke_or_flag_their_key,
    keys_issued_elsewhere_are_imported_all_or_none,
    credits_are_drawn_exactly_and_refilled,
    verification_sees_its_workspace_allowlist,
    key_usage_moves_forward_only,
    token_usage_moves_forward_only,
    deleting_a_workspace_cascades,
    idempotency_lifecycle,
    stale_idempotency_claims_are_reclaimed,
    members_change_and_leave_but_an_owner_stays,
    every_change_is_audited_in_its_account,
    audit_chain_detects_tampering,
    concurrent_writers_all_succeed,
    corrupt_rows_are_reported,
    reports_its_backend,
    console_sessions_and_invitations,
    request_logs_round_trip_filter_and_purge,
    request_logs_page_across_blocks_and_batches,
);
