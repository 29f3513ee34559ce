//! The one implementation of [`Store`], on sqlx's `Any` driver.
//!
//! Both backends run the same SQL: numbered `$1` placeholders (SQLite reads
//! `$N` as parameter N), `RETURNING`, `ON CONFLICT`, and only the column
//! types `Any` decodes (TEXT and 64-bit integers). The few differences —
//! how a write transaction starts, whether rows can be locked, and how a
//! batch of request logs is best sent (`request_logs::insert`) — are
//! chosen by [`Dialect`].
//!
//! Each submodule holds the queries of one area as functions on a
//! connection; the [`Store`] methods below only choose between a read
//! connection and a write transaction and call them.

mod accounts;
mod allowlist;
pub(crate) mod audit;
mod catalog;
mod console;
mod credits;
mod decode;
mod exports;
mod idempotency;
mod integrations;
mod jobs;
mod keys;
mod leaks;
mod lifecycle;
mod request_logs;
mod tokens;
mod workspaces;

use crate::error::{StoreError, StoreResult};
use crate::ids::now_ms;
use crate::records::*;
use async_trait::async_trait;
use keyward_core::KeyStatus;
use serde_json::json;
use sqlx::any::AnyPoolOptions;
use sqlx::pool::PoolConnection;
use sqlx::{Any, Transaction};
use sqlx::{AnyConnection, AnyPool};
use std::sync::Arc;
use std::sync::Once;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// What differs between the backends once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    /// How write transactions begin. SQLite's default `BEGIN` takes the write
    /// lock only at the first write, and a transaction that has read first
    /// may then fail at once with SQLITE_BUSY when another connection (say the
    /// CLI on the same file) writes; `BEGIN IMMEDIATE` takes the lock up
    /// front, waiting for it under `busy_timeout` instead.
    fn begin_write_statement(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => Some("BEGIN IMMEDIATE"),
            Dialect::Postgres => None,
        }
    }

    /// A row-locking clause (`FOR UPDATE OF k`, `FOR SHARE`) where it is
    /// needed: PostgreSQL runs concurrent writers at READ COMMITTED, so a
    /// check-then-write must lock what it checked. SQLite has no such clause
    /// and needs none: it runs one writer at a time.
    fn row_lock(self, clause: &'static str) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => clause,
        }
    }
}

/// Registers sqlx's drivers with `Any`; sqlx refuses a second registration,
/// and both backends' `open` call this.
pub(crate) fn install_drivers() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(sqlx::any::install_default_drivers);
}

/// Connects a pool, telling a malformed URL apart from an unreachable server.
pub(crate) async fn connect(options: AnyPoolOptions, url: &str) -> StoreResult<AnyPool> {
    install_drivers();
    options.connect(url).await.map_err(|e| match e {
        sqlx::Error::Configuration(cause) => {
            StoreError::Config(format!("invalid database URL: {cause}"))
        }
        other => StoreError::Unavailable(other),
    })
}

pub(crate) struct SqlStore {
    pool: AnyPool,
    writer: Writer,
    dialect: Dialect,
    /// Credit draws waiting for their turn, run together in one
    /// transaction ([`credits::DrawQueue`]).
    credit_draws: credits::DrawQueue,
    /// Where [`crate::ChangeFeed`] connects to LISTEN; `None` on SQLite,
    /// which only this process writes.
    listen_url: Option<String>,
}

/// Where and how write transactions run; a clone shares the pool and the
/// gate, so that work spawned off a request can write as the store does.
#[derive(Clone)]
pub(crate) struct Writer {
    /// On SQLite, a pool of one connection kept open for good: SQLite
    /// writes one at a time anyway, and one connection keeps the writes'
    /// prepared statements (the request-log batch INSERTs take about a
    /// million instructions each to prepare) and page cache warm, where a
    /// writer taking turns on every pooled connection would prepare each
    /// statement once per connection and re-read pages the others changed.
    /// On PostgreSQL, the store's pool itself.
    pool: AnyPool,
    dialect: Dialect,
    /// Held around every write transaction on SQLite. SQLite allows one
    /// writer per database file; without the gate, concurrent writers from
    /// this process would contend for the file lock, and those that lose
    /// after `busy_timeout` (or at once, on a lock upgrade) fail with
    /// "database is locked". Queuing them here in FIFO order instead costs
    /// nothing SQLite would not serialise anyway. Readers never take it (WAL
    /// lets them run beside the writer). `None` on PostgreSQL.
    gate: Option<Arc<Mutex<()>>>,
}

impl Writer {
    /// Starts a write transaction. The gate is taken before a connection,
    /// so writers queue without holding pool connections that readers need.
    async fn begin(&self) -> StoreResult<WriteTx> {
        let gate = match &self.gate {
            Some(gate) => Some(gate.clone().lock_owned().await),
            None => None,
        };
        self.begin_under(gate).await
    }

    /// Starts a write transaction under a gate already taken (if any).
    async fn begin_under(&self, gate: Option<OwnedMutexGuard<()>>) -> StoreResult<WriteTx> {
        let tx = match self.dialect.begin_write_statement() {
            Some(statement) => self.pool.begin_with(statement).await?,
            None => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, _gate: gate })
    }
}

/// A write transaction, holding the write gate (if any) until it ends.
pub(crate) struct WriteTx {
    // Declared first so that it drops (and rolls back) before the gate opens.
    tx: Transaction<'static, Any>,
    _gate: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl SqlStore {
    pub(crate) fn new(pool: AnyPool, writes: AnyPool, dialect: Dialect) -> Self {
        let writer = Writer {
            pool: writes,
            dialect,
            gate: (dialect == Dialect::Sqlite).then(|| Arc::new(Mutex::new(()))),
        };
        Self {
            pool,
            credit_draws: credits::DrawQueue::new(writer.clone()),
            writer,
            dialect,
            listen_url: None,
        }
    }

    pub(crate) fn with_listen_url(self, url: &str) -> Self {
        Self {
            listen_url: Some(url.to_owned()),
            ..self
        }
    }

    async fn begin_write(&self) -> StoreResult<WriteTx> {
        self.writer.begin().await
    }

    /// A connection for reads that need no transaction.
    async fn read(&self) -> StoreResult<PoolConnection<Any>> {
        Ok(self.pool.acquire().await?)
    }
}

// ── Helpers shared by the submodules ─────────────────────────────────────

/// The page size a request asks for: 50 when unset, at most 100.
const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 100;

/// A page request turned into query parameters. One row more than the page
/// is fetched: its presence says there is a next page.
struct PageWindow<'p> {
    size: usize,
    after: Option<&'p str>,
}

impl<'p> PageWindow<'p> {
    fn new(page: &'p PageRequest) -> Self {
        let size = match page.limit {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        Self {
            size: size as usize,
            after: page.after.as_deref(),
        }
    }

    /// The `LIMIT` to bind.
    fn fetch_limit(&self) -> i64 {
        self.size as i64 + 1
    }

    /// Cuts the fetched rows to the page and says where the next one starts.
    fn into_page<T>(self, mut items: Vec<T>, id_of: impl Fn(&T) -> &str) -> Page<T> {
        let has_more = items.len() > self.size;
        items.truncate(self.size);
        let next_after = if has_more {
            items.last().map(|last| id_of(last).to_owned())
        } else {
            None
        };
        Page { items, next_after }
    }
}

/// How a list in `order` compares with its cursor and sorts: the rows
/// *past* the cursor are those greater for oldest first and smaller for
/// newest first. Both are fixed strings, spliced into SQL.
fn ordering(order: ListOrder) -> (&'static str, &'static str) {
    match order {
        ListOrder::OldestFirst => (">", "ASC"),
        ListOrder::NewestFirst => ("<", "DESC"),
    }
}

/// `$first, $first+1, …` for an `IN (…)` list of `count` values.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn conflict(field: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::Conflict {
        field,
        message: message.into(),
    }
}

fn not_found_in(what: &'static str, field: &'static str) -> StoreError {
    StoreError::NotFound {
        what,
        field: Some(field),
    }
}

/// Maps a failed write. The checks inside each transaction report rule
/// violations with the right field first; these cover the races that slip
/// past them (PostgreSQL runs at READ COMMITTED): a unique rule becomes
/// `on_unique`, a vanished parent row `on_missing_parent`, anything else
/// stays a database failure.
fn write_error(
    err: sqlx::Error,
    on_unique: impl FnOnce() -> StoreError,
    on_missing_parent: impl FnOnce() -> StoreError,
) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        if db.is_unique_violation() {
            return on_unique();
        }
        if db.is_foreign_key_violation() {
            return on_missing_parent();
        }
    }
    StoreError::Unavailable(err)
}

// ── The trait ────────────────────────────────────────────────────────────

/// Runs `$body` with `$conn` bound to a new write transaction and commits
/// it if the body returns; an early `?` return drops the transaction, which
/// rolls it back. (A macro rather than a function taking a closure: an async
/// closure borrowing the transaction cannot be named in a signature.)
impl SqlStore {
    /// Adds a member and its `member.created` event, in the caller's
    /// transaction.
    async fn add_member_audited(
        &self,
        conn: &mut AnyConnection,
        account: &str,
        actor: &Actor,
        new: NewMember,
    ) -> StoreResult<Member> {
        let member = accounts::add_member(conn, account, new).await?;
        let after = audit::member_state(&member);
        audit::append(
            conn,
            account,
            actor,
            "member.created",
            "member",
            &member.id,
            None,
            Some(after),
        )
        .await?;
        Ok(member)
    }
}

macro_rules! in_write_tx {
    ($store:expr, |$conn:ident| $body:expr) => {{
        let mut tx = $store.begin_write().await?;
        let $conn = tx.conn();
        let value = $body;
        tx.commit().await?;
        Ok(value)
    }};
}

#[async_trait]
impl crate::Store for SqlStore {
    fn backend(&self) -> &'static str {
        self.dialect.name()
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.read().await?)
            .await?;
        Ok(())
    }

    async fn count_accounts(&self) -> StoreResult<u64> {
        accounts::count(&mut *self.read().await?).await
    }

    async fn bootstrap_account(&self, mut new: NewAccount) -> StoreResult<Bootstrapped> {
        in_write_tx!(self, |conn| {
            let primary_key = new.primary_key.take();
            let mut boot = accounts::bootstrap(conn, new).await?;
            let owner = Actor {
                member_id: Some(boot.owner.id.clone()),
                ..Actor::system()
            };
            let after = json!({
                "name": boot.account.name,
                "owner_email": boot.owner.email,
                "workspace_id": boot.workspace.workspace.id,
                "management_token_id": boot.token.id,
            });
            audit::append(
                conn,
                &boot.account.id,
                &owner,
                "account.created",
                "account",
                &boot.account.id,
                None,
                Some(after),
            )
            .await?;
            if let Some(mut key) = primary_key {
                key.workspace_id = boot.workspace.workspace.id.clone();
                let account = boot.account.id.clone();
                let key =
                    lifecycle::create_audited(conn, self.dialect, &account, &owner, key).await?;
                boot.workspace.primary_key = Some(key);
            }
            boot
        })
    }

    async fn list_members(&self, account: &str, page: &PageRequest) -> StoreResult<Page<Member>> {
        accounts::list_members(&mut *self.read().await?, account, PageWindow::new(page)).await
    }

    async fn get_member(&self, account: &str, member_id: &str) -> StoreResult<Member> {
        accounts::find_member(&mut *self.read().await?, account, member_id)
            .await?
            .ok_or_else(|| StoreError::not_found("member"))
    }

    async fn create_member(
        &self,
        account: &str,
        actor: &Actor,
        new: NewMember,
    ) -> StoreResult<Member> {
        in_write_tx!(self, |conn| {
            self.add_member_audited(conn, account, actor, new).await?
        })
    }

    async fn update_member(
        &self,
        account: &str,
        actor: &Actor,
        member_id: &str,
        patch: MemberPatch,
    ) -> StoreResult<Member> {
        in_write_tx!(self, |conn| {
            let (before, after) =
                accounts::update_member(conn, self.dialect, account, member_id, patch).await?;
            let (old, new) =
                audit::changed_fields(&audit::member_state(&before), &audit::member_state(&after));
            audit::append(
                conn,
                account,
                actor,
                "member.updated",
                "member",
                member_id,
                Some(old),
                Some(new),
            )
            .await?;
            after
        })
    }

    async fn delete_member(
        &self,
        account: &str,
        actor: &Actor,
        member_id: &str,
    ) -> StoreResult<()> {
        in_write_tx!(self, |conn| {
            let removed = accounts::delete_member(conn, self.dialect, account, member_id).await?;
            audit::append(
                conn,
                account,
                actor,
                "member.deleted",
                "member",
                member_id,
                Some(audit::member_state(&removed)),
                None,
            )
            .await?
        })
    }

    async fn create_management_token(
        &self,
        account: &str,
        actor: &Actor,
        new: NewManagementToken,
    ) -> StoreResult<ManagementToken> {
        in_write_tx!(self, |conn| {
            let token = tokens::create(conn, account, new).await?;
            let after = audit::token_state(&token);
            audit::append(
                conn,
                account,
                actor,
                "management_token.created",
                "management_token",
                &token.id,
                None,
                Some(after),
            )
            .await?;
            token
        })
    }

    async fn list_management_tokens(
        &self,
        account: &str,
        member_id: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<ManagementToken>> {
        let window = PageWindow::new(page);
        tokens::list(&mut *self.read().await?, account, member_id, window).await
    }

    async fn get_management_token(&self, account: &str, id: &str) -> StoreResult<ManagementToken> {
        tokens::find(&mut *self.read().await?, account, id)
            .await?
            .ok_or_else(|| StoreError::not_found("management token"))
    }

    async fn delete_management_token(
        &self,
        account: &str,
        actor: &Actor,
        id: &str,
    ) -> StoreResult<()> {
        in_write_tx!(self, |conn| {
            let token = tokens::find(conn, account, id)
                .await?
                .ok_or_else(|| StoreError::not_found("management token"))?;
            tokens::delete(conn, account, id).await?;
            let before = audit::token_state(&token);
            audit::append(
                conn,
                account,
                actor,
                "management_token.deleted",
                "management_token",
                id,
                Some(before),
                None,
            )
            .await?
        })
    }

    async fn find_token_by_hash(&self, hash_hex: &str) -> StoreResult<Option<TokenPrincipal>> {
        tokens::find_principal(&mut *self.read().await?, hash_hex).await
    }

    async fn record_token_usage(&self, usages: &[TokenUsage]) -> StoreResult<()> {
        if usages.is_empty() {
            return Ok(());
        }
        in_write_tx!(self, |conn| tokens::record_usage(conn, usages).await?)
    }

    async fn find_user_for_sign_in(&self, email: &str) -> StoreResult<Option<SignInUser>> {
        console::find_user(&mut *self.read().await?, email).await
    }

    async fn create_session(
        &self,
        account: &str,
        actor: &Actor,
        new: NewSession,
    ) -> StoreResult<Session> {
        in_write_tx!(self, |conn| {
            let session = console::create_session(conn, account, new).await?;
            let after = json!({"member_id": session.member_id, "expires_at": session.expires_at});
            audit::append(
                conn,
                account,
                actor,
                "session.created",
                "session",
                &session.id,
                None,
                Some(after),
            )
            .await?;
            session
        })
    }

    async fn find_session(
        &self,
        hash_hex: &str,
        now: i64,
    ) -> StoreResult<Option<SessionPrincipal>> {
        console::find_session(&mut *self.read().await?, hash_hex, now).await
    }

    async fn delete_session(&self, hash_hex: &str) -> StoreResult<()> {
        in_write_tx!(self, |conn| {
            if let Some(ended) = console::delete_session(conn, hash_hex).await? {
                let actor = Actor {
                    member_id: Some(ended.member_id.clone()),
                    ..Actor::system()
                };
                let before = json!({"member_id": ended.member_id});
                audit::append(
                    conn,
                    &ended.account_id,
                    &actor,
                    "session.ended",
                    "session",
                    &ended.id,
                    Some(before),
                    None,
                )
                .await?;
            }
        })
    }

    async fn invite_member(
        &self,
        account: &str,
        actor: &Actor,
        new: NewMember,
        invitation: NewInvitation,
    ) -> StoreResult<(Member, Option<Invitation>)> {
        in_write_tx!(self, |conn| {
            let member = self.add_member_audited(conn, account, actor, new).await?;
            let created =
                console::create_invitation(conn, account, &member.id, &invitation).await?;
            if let Some(created) = &created {
                let after = json!({"member_id": member.id, "expires_at": created.expires_at});
                audit::append(
                    conn,
                    account,
                    actor,
                    "invitation.created",
                    "invitation",
                    &created.id,
                    None,
                    Some(after),
                )
                .await?;
            }
            (member, created)
        })
    }

    async fn accept_invitation(
        &self,
        hash_hex: &str,
        password_hash: &str,
        now: i64,
    ) -> StoreResult<Option<Member>> {
        in_write_tx!(self, |conn| {
            let member = console::accept_invitation(conn, hash_hex, password_hash, now).await?;
            if let Some(member) = &member {
                let actor = Actor {
                    member_id: Some(member.id.clone()),
                    ..Actor::system()
                };
                audit::append(
                    conn,
                    &member.account_id,
                    &actor,
                    "invitation.accepted",
                    "member",
                    &member.id,
                    None,
                    None,
                )
                .await?;
            }
            member
        })
    }

    async fn create_workspace(
        &self,
        account: &str,
        actor: &Actor,
        mut new: NewWorkspace,
    ) -> StoreResult<WorkspaceWithEnvironments> {
        in_write_tx!(self, |conn| {
            let primary_key = new.primary_key.take();
            let mut created = workspaces::create(conn, account, new).await?;
            let environments: Vec<&str> = created
                .environments
                .iter()
                .map(|e| e.name.as_str())
                .collect();
            let after = json!({"name": created.workspace.name, "environments": environments});
            audit::append(
                conn,
                account,
                actor,
                "workspace.created",
                "workspace",
                &created.workspace.id,
                None,
                Some(after),
            )
            .await?;
            if let Some(mut key) = primary_key {
                key.workspace_id = created.workspace.id.clone();
                let key =
                    lifecycle::create_audited(conn, self.dialect, account, actor, key).await?;
                created.primary_key = Some(key);
            }
            created
        })
    }

    async fn list_workspaces(
        &self,
        account: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<Workspace>> {
        workspaces::list(&mut *self.read().await?, account, PageWindow::new(page)).await
    }

    async fn get_workspace(&self, account: &str, id: &str) -> StoreResult<Workspace> {
        workspaces::find(&mut *self.read().await?, account, id)
            .await?
            .ok_or_else(|| StoreError::not_found("workspace"))
    }

    async fn rename_workspace(
        &self,
        account: &str,
        actor: &Actor,
        id: &str,
        name: &str,
    ) -> StoreResult<Workspace> {
        in_write_tx!(self, |conn| {
            let before = workspaces::find(conn, account, id)
                .await?
                .ok_or_else(|| StoreError::not_found("workspace"))?;
            let renamed = workspaces::rename(conn, account, id, name).await?;
            audit::append(
                conn,
                account,
                actor,
                "workspace.updated",
                "workspace",
                id,
                Some(json!({"name": before.name})),
                Some(json!({"name": renamed.name})),
            )
            .await?;
            renamed
        })
    }

    async fn delete_workspace(&self, account: &str, actor: &Actor, id: &str) -> StoreResult<()> {
        in_write_tx!(self, |conn| {
            let before = workspaces::find(conn, account, id)
                .await?
                .ok_or_else(|| StoreError::not_found("workspace"))?;
            workspaces::delete(conn, account, id).await?;
            audit::append(
                conn,
                account,
                actor,
                "workspace.deleted",
                "workspace",
                id,
                Some(json!({"name": before.name})),
                None,
            )
            .await?
        })
    }

    async fn list_environments(
        &self,
        account: &str,
        workspace: &str,
    ) -> StoreResult<Vec<Environment>> {
        let mut conn = self.read().await?;
        workspaces::require(&mut conn, account, workspace, None).await?;
        workspaces::list_environments(&mut conn, account, workspace).await
    }

    async fn create_environment(
        &self,
        account: &str,
        actor: &Actor,
        workspace: &str,
        name: &str,
        tag: &str,
    ) -> StoreResult<Environment> {
        in_write_tx!(self, |conn| {
            workspaces::require(conn, account, workspace, None).await?;
            let environment =
                workspaces::insert_environment(conn, account, workspace, name, tag).await?;
            let after = json!({"workspace_id": workspace, "name": name, "tag": tag});
            audit::append(
                conn,
                account,
                actor,
                "environment.created",
                "environment",
                &environment.id,
                None,
                Some(after),
            )
            .await?;
            environment
        })
    }

    async fn list_permissions(&self, account: &str) -> StoreResult<Vec<CatalogPermission>> {
        catalog::list(&mut *self.read().await?, account).await
    }

    async fn create_permission(
        &self,
        account: &str,
        actor: &Actor,
        name: &str,
        description: Option<&str>,
    ) -> StoreResult<CatalogPermission> {
        in_write_tx!(self, |conn| {
            let permission = catalog::create(conn, account, name, description).await?;
            audit::append(
                conn,
                account,
                actor,
                "permission.created",
                "permission",
                name,
                None,
                Some(json!({"description": description})),
            )
            .await?;
            permission
        })
    }

    async fn delete_permission(&self, account: &str, actor: &Actor, name: &str) -> StoreResult<()> {
        in_write_tx!(self, |conn| {
            catalog::delete_unused(conn, account, name).await?;
            audit::append(
                conn,
                account,
                actor,
                "permission.deleted",
                "permission",
                name,
                None,
                None,
            )
            .await?
        })
    }

    async fn create_key(&self, account: &str, actor: &Actor, new: NewKey) -> StoreResult<ApiKey> {
        in_write_tx!(self, |conn| lifecycle::create_audited(
            conn,
            self.dialect,
            account,
            actor,
            new
        )
        .await?)
    }

    async fn list_keys(
        &self,
        account: &str,
        filter: &KeyFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<ApiKey>> {
        keys::list(
            &mut *self.read().await?,
            account,
            filter,
            PageWindow::new(page),
        )
        .await
    }

    async fn get_key(&self, account: &str, id: &str) -> StoreResult<ApiKey> {
        keys::find(&mut *self.read().await?, account, id, "")
            .await?
            .ok_or_else(|| StoreError::not_found("key"))
    }

    async fn update_key(
        &self,
        account: &str,
        actor: &Actor,
        id: &str,
        patch: KeyPatch,
    ) -> StoreResult<ApiKey> {
        in_write_tx!(self, |conn| {
            // Locked (on PostgreSQL) before it is read, so that the audited
            // "before" is the state this update replaces.
            let before = keys::find(conn, account, id, self.dialect.row_lock("FOR UPDATE OF k"))
                .await?
                .ok_or_else(|| StoreError::not_found("key"))?;
            let key = keys::update(conn, self.dialect, account, id, patch).await?;
            let (before, after) =
                audit::changed_fields(&audit::key_state(&before), &audit::key_state(&key));
            audit::append(
                conn,
                account,
                actor,
                "key.updated",
                "key",
                id,
                Some(before),
                Some(after),
            )
            .await?;
            key
        })
    }

    async fn set_key_status(
        &self,
        account: &str,
        actor: &Actor,
        id: &str,
        status: KeyStatus,
    ) -> StoreResult<ApiKey> {
        in_write_tx!(self, |conn| {
            keys::find(conn, account, id, self.dialect.row_lock("FOR UPDATE OF k")).await?;
            keys::set_status(conn, account, actor, id, status).await?
        })
    }

    async fn find_key_for_verification(
        &self,
        hash_hex: &str,
    ) -> StoreResult<Option<VerificationRecord>> {
        keys::find_for_verification(&mut *self.read().await?, hash_hex).await
    }

    async fn record_key_usage(&self, usages: &[KeyUsage]) -> StoreResult<()> {
        if usages.is_empty() {
            return Ok(());
        }
        in_write_tx!(self, |conn| keys::record_usage(conn, usages).await?)
    }

    async fn draw_credits(
        &self,
        account: &str,
        key_id: &str,
        cost: u64,
        at: i64,
    ) -> StoreResult<Option<CreditDraw>> {
        let draw = credits::Draw {
            account: account.to_owned(),
            key_id: key_id.to_owned(),
            cost,
            at,
        };
        self.credit_draws.draw(draw).await
    }

    async fn change_credits(
        &self,
        account: &str,
        actor: &Actor,
        key_id: &str,
        change: CreditChange,
    ) -> StoreResult<ApiKey> {
        in_write_tx!(self, |conn| credits::change_audited(
            conn,
            self.dialect,
            account,
            actor,
            key_id,
            change
        )
        .await?)
    }

    async fn import_keys(
        &self,
        account: &str,
        actor: &Actor,
        keys: Vec<NewKey>,
    ) -> StoreResult<Vec<ApiKey>> {
        in_write_tx!(self, |conn| lifecycle::import(
            conn,
            self.dialect,
            account,
            actor,
            keys
        )
        .await?)
    }

    async fn report_leaked_key(
        &self,
        actor: &Actor,
        report: LeakReport,
    ) -> StoreResult<Option<KeyLeak>> {
        in_write_tx!(self, |conn| leaks::report(
            conn,
            self.dialect,
            actor,
            report
        )
        .await?)
    }

    async fn report_leaked_token(
        &self,
        actor: &Actor,
        report: LeakReport,
    ) -> StoreResult<Option<LeakedToken>> {
        in_write_tx!(self, |conn| leaks::report_token(conn, actor, report)
            .await?)
    }

    async fn list_key_leaks(&self, account: &str, key_id: &str) -> StoreResult<Vec<KeyLeak>> {
        leaks::list(&mut *self.read().await?, account, key_id).await
    }

    async fn list_allowlist(&self, account: &str) -> StoreResult<Vec<AllowlistEntry>> {
        allowlist::list(&mut *self.read().await?, account).await
    }

    async fn create_allowlist_entry(
        &self,
        account: &str,
        actor: &Actor,
        new: NewAllowlistEntry,
    ) -> StoreResult<AllowlistEntry> {
        in_write_tx!(self, |conn| {
            let entry = allowlist::create(conn, account, new).await?;
            audit::append(
                conn,
                account,
                actor,
                "ip_allowlist.created",
                "ip_allowlist_entry",
                &entry.id,
                None,
                Some(audit::allowlist_state(&entry)),
            )
            .await?;
            entry
        })
    }

    async fn delete_allowlist_entry(
        &self,
        account: &str,
        actor: &Actor,
        id: &str,
    ) -> StoreResult<()> {
        in_write_tx!(self, |conn| {
            // The account's list is short; reading it keeps what was deleted
            // in the audit event.
            let before = allowlist::list(conn, account)
                .await?
                .into_iter()
                .find(|entry| entry.id == id)
                .ok_or_else(|| StoreError::not_found("allowlist entry"))?;
            allowlist::delete(conn, account, id).await?;
            audit::append(
                conn,
                account,
                actor,
                "ip_allowlist.deleted",
                "ip_allowlist_entry",
                id,
                Some(audit::allowlist_state(&before)),
                None,
            )
            .await?
        })
    }

    async fn list_audit_events(
        &self,
        account: &str,
        filter: &AuditFilter,
        order: ListOrder,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditEvent>> {
        let window = PageWindow::new(page);
        audit::list(&mut *self.read().await?, account, filter, order, window).await
    }

    async fn verify_audit_chain(
        &self,
        account: &str,
        checkpoint: Option<i64>,
    ) -> StoreResult<AuditChainReport> {
        audit::verify(&mut *self.read().await?, account, checkpoint).await
    }

    async fn list_account_ids(&self) -> StoreResult<Vec<String>> {
        accounts::list_ids(&mut *self.read().await?).await
    }

    async fn begin_idempotent(
        &self,
        account: &str,
        key: &str,
        fingerprint: &str,
    ) -> StoreResult<IdempotencyClaim> {
        in_write_tx!(self, |conn| idempotency::claim(
            conn,
            account,
            key,
            fingerprint
        )
        .await?)
    }

    async fn finish_idempotent(
        &self,
        account: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> StoreResult<()> {
        in_write_tx!(self, |conn| idempotency::finish(
            conn, account, key, status, body
        )
        .await?)
    }

    async fn abandon_idempotent(&self, account: &str, key: &str) -> StoreResult<()> {
        in_write_tx!(self, |conn| idempotency::abandon(conn, account, key)
            .await?)
    }

    async fn insert_request_logs(&self, batch: &crate::RequestLogBatch) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        in_write_tx!(self, |conn| request_logs::insert(conn, self.dialect, batch)
            .await?)
    }

    async fn list_request_logs(
        &self,
        account: &str,
        filter: &crate::RequestLogFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<crate::RequestLog>> {
        request_logs::list(
            &mut *self.read().await?,
            account,
            filter,
            PageWindow::new(page),
        )
        .await
    }

    async fn purge_request_logs(&self, before: i64) -> StoreResult<u64> {
        in_write_tx!(self, |conn| request_logs::purge(conn, before).await?)
    }

    async fn change_feed(&self) -> StoreResult<Option<crate::ChangeFeed>> {
        match &self.listen_url {
            Some(url) => Ok(Some(crate::ChangeFeed::start(url).await?)),
            None => Ok(None),
        }
    }

    async fn rotate_key(
        &self,
        account: &str,
        actor: &Actor,
        rotation: KeyReplacement,
    ) -> StoreResult<ApiKey> {
        in_write_tx!(self, |conn| lifecycle::rotate(
            conn,
            self.dialect,
            account,
            actor,
            rotation
        )
        .await?)
    }

    async fn end_key_grace(&self, account: &str, actor: &Actor, id: &str) -> StoreResult<ApiKey> {
        in_write_tx!(self, |conn| lifecycle::end_grace(
            conn,
            self.dialect,
            account,
            actor,
            id
        )
        .await?)
    }

    async fn revoke_key(
        &self,
        account: &str,
        actor: &Actor,
        id: &str,
        force: bool,
    ) -> StoreResult<ApiKey> {
        in_write_tx!(self, |conn| lifecycle::revoke(
            conn,
            self.dialect,
            account,
            actor,
            id,
            force
        )
        .await?)
    }

    async fn delete_key(
        &self,
        account: &str,
        actor: &Actor,
        deletion: KeyDeletion,
    ) -> StoreResult<()> {
        in_write_tx!(self, |conn| lifecycle::delete(
            conn,
            self.dialect,
            account,
            actor,
            deletion
        )
        .await?)
    }

    async fn list_integrations(
        &self,
        account: &str,
        workspace: &str,
    ) -> StoreResult<Vec<Integration>> {
        integrations::list(&mut *self.read().await?, account, workspace).await
    }

    async fn get_integration(&self, account: &str, id: &str) -> StoreResult<Integration> {
        integrations::find(&mut *self.read().await?, account, id).await
    }

    async fn create_integration(
        &self,
        account: &str,
        actor: &Actor,
        new: NewIntegration,
    ) -> StoreResult<Integration> {
        in_write_tx!(self, |conn| integrations::create(
            conn,
            self.dialect,
            account,
            actor,
            new
        )
        .await?)
    }

    async fn update_integration(
        &self,
        account: &str,
        actor: &Actor,
        id: &str,
        patch: IntegrationPatch,
    ) -> StoreResult<Integration> {
        in_write_tx!(self, |conn| integrations::update(
            conn,
            self.dialect,
            account,
            actor,
            id,
            patch
        )
        .await?)
    }

    async fn delete_integration(&self, account: &str, actor: &Actor, id: &str) -> StoreResult<()> {
        in_write_tx!(self, |conn| integrations::delete(conn, account, actor, id)
            .await?)
    }

    async fn enqueue_job(
        &self,
        account: Option<&str>,
        actor: &Actor,
        new: NewJob,
    ) -> StoreResult<Job> {
        in_write_tx!(self, |conn| jobs::enqueue(
            conn,
            account,
            actor,
            new,
            now_ms()
        )
        .await?)
    }

    async fn list_jobs(
        &self,
        account: &str,
        order: ListOrder,
        page: &PageRequest,
    ) -> StoreResult<Page<Job>> {
        jobs::list(
            &mut *self.read().await?,
            account,
            order,
            PageWindow::new(page),
        )
        .await
    }

    async fn get_job(&self, account: &str, id: &str) -> StoreResult<Job> {
        jobs::find(&mut *self.read().await?, account, id).await
    }

    async fn claim_job(&self) -> StoreResult<Option<Job>> {
        in_write_tx!(self, |conn| jobs::claim(conn, self.dialect, now_ms())
            .await?)
    }

    async fn report_job_progress(
        &self,
        id: &str,
        done: u64,
        total: Option<u64>,
    ) -> StoreResult<()> {
        in_write_tx!(self, |conn| jobs::progress(conn, id, done, total, now_ms())
            .await?)
    }

    async fn finish_job(&self, id: &str, outcome: JobOutcome) -> StoreResult<()> {
        in_write_tx!(self, |conn| jobs::finish(conn, id, outcome, now_ms())
            .await?)
    }

    async fn recover_stale_jobs(&self, stale_before: i64) -> StoreResult<u64> {
        in_write_tx!(self, |conn| jobs::recover_stale(
            conn,
            stale_before,
            now_ms()
        )
        .await?)
    }

    async fn job_pending(&self, kind: &str) -> StoreResult<bool> {
        jobs::pending_of_kind(&mut *self.read().await?, kind).await
    }

    async fn rotate_key_for_job(
        &self,
        account: &str,
        actor: &Actor,
        rotation: JobKeyReplacement,
    ) -> StoreResult<JobRotation> {
        in_write_tx!(self, |conn| jobs::rotate_for_job(
            conn,
            self.dialect,
            account,
            actor,
            rotation,
            now_ms()
        )
        .await?)
    }

    async fn list_job_secrets(
        &self,
        account: &str,
        job_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<JobSecret>> {
        jobs::list_secrets(
            &mut *self.read().await?,
            account,
            job_id,
            PageWindow::new(page),
        )
        .await
    }

    async fn expire_due_keys(&self, limit: u32) -> StoreResult<u64> {
        in_write_tx!(self, |conn| jobs::expire_due_keys(conn, now_ms(), limit)
            .await?)
    }

    async fn clear_job_export(&self, account: &str, job_id: &str) -> StoreResult<()> {
        in_write_tx!(self, |conn| exports::clear(conn, account, job_id).await?)
    }

    async fn add_job_export_part(
        &self,
        account: &str,
        job_id: &str,
        part: u32,
        data: &[u8],
    ) -> StoreResult<()> {
        in_write_tx!(self, |conn| exports::add_part(
            conn,
            account,
            job_id,
            part,
            data,
            now_ms()
        )
        .await?)
    }

    async fn open_job_export(
        &self,
        account: &str,
        actor: &Actor,
        job_id: &str,
    ) -> StoreResult<Option<Vec<u8>>> {
        in_write_tx!(self, |conn| {
            let first = exports::part(conn, account, job_id, 0).await?;
            if first.is_some() {
                audit::append(
                    conn,
                    account,
                    actor,
                    "job.export_downloaded",
                    "job",
                    job_id,
                    None,
                    None,
                )
                .await?;
            }
            first
        })
    }

    async fn job_export_part(
        &self,
        account: &str,
        job_id: &str,
        part: u32,
    ) -> StoreResult<Option<Vec<u8>>> {
        exports::part(&mut *self.read().await?, account, job_id, part).await
    }

    async fn purge_job_exports(&self, before: i64) -> StoreResult<u64> {
        in_write_tx!(self, |conn| exports::purge(conn, before).await?)
    }
}
