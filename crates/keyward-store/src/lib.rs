//! Keyward's persistence: one [`Store`] trait, implemented once in SQL for the
//! backends sqlx can reach through its `Any` driver, with one module per backend
//! for what differs (connection set-up, migrations, write serialisation).
//!
//! Every method that reads or changes tenant data takes the account id and
//! scopes its query by it: an object of another account is indistinguishable
//! from one that does not exist ([`StoreError::NotFound`]).
//!
//! Times are Unix milliseconds (UTC) in `i64`; lists and JSON objects are stored
//! as JSON text so that both backends share one schema shape.

mod error;
mod ids;
mod postgres;
mod records;
mod sql;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{StoreError, StoreResult};
pub use records::*;

use async_trait::async_trait;
use std::sync::Arc;

/// Opens the store named by a URL: `sqlite://path/to/file.db` (created if
/// missing) or `postgres://…`. Migrations are applied before it returns.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::open(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(postgres::open(url).await?))
    } else {
        Err(StoreError::Config(
            "database URL must start with sqlite:// or postgres://".into(),
        ))
    }
}

/// Everything Keyward persists. Implementations must make each method atomic:
/// it either applies completely or not at all.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// A cheap round trip, for readiness probes.
    async fn ping(&self) -> StoreResult<()>;

    // ── Accounts, users, members ─────────────────────────────────────────

    async fn count_accounts(&self) -> StoreResult<u64>;

    /// Creates an account with its owner (a new user, or an existing one
    /// found by email), a first workspace with its environments, and the
    /// owner's first management token, all in one transaction.
    async fn bootstrap_account(&self, new: NewAccount) -> StoreResult<Bootstrapped>;

    async fn list_members(&self, account: &str, page: &PageRequest) -> StoreResult<Page<Member>>;

    async fn get_member(&self, account: &str, member_id: &str) -> StoreResult<Member>;

    /// Adds a user (created without a password if the email is new) to the
    /// account. Conflict on `email` if they are a member already.
    async fn create_member(&self, account: &str, new: NewMember) -> StoreResult<Member>;

    // ── Management tokens ────────────────────────────────────────────────

    async fn create_management_token(
        &self,
        account: &str,
        new: NewManagementToken,
    ) -> StoreResult<ManagementToken>;

    /// Tokens of the account, or only those of one member.
    async fn list_management_tokens(
        &self,
        account: &str,
        member_id: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<ManagementToken>>;

    async fn get_management_token(&self, account: &str, id: &str) -> StoreResult<ManagementToken>;

    async fn delete_management_token(&self, account: &str, id: &str) -> StoreResult<()>;

    /// Finds the token with this SHA-256 hash (hex) together with its
    /// member's current role and grants. Not scoped: this is how the account
    /// of a request is found.
    async fn find_token_by_hash(&self, hash_hex: &str) -> StoreResult<Option<TokenPrincipal>>;

    // ── Workspaces and environments ──────────────────────────────────────

    /// Creates a workspace with the given environments in one transaction.
    async fn create_workspace(
        &self,
        account: &str,
        new: NewWorkspace,
    ) -> StoreResult<WorkspaceWithEnvironments>;

    async fn list_workspaces(
        &self,
        account: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<Workspace>>;

    async fn get_workspace(&self, account: &str, id: &str) -> StoreResult<Workspace>;

    async fn rename_workspace(&self, account: &str, id: &str, name: &str)
    -> StoreResult<Workspace>;

    /// Deletes the workspace, its environments, its keys and its allowlist
    /// grants.
    async fn delete_workspace(&self, account: &str, id: &str) -> StoreResult<()>;

    async fn list_environments(
        &self,
        account: &str,
        workspace: &str,
    ) -> StoreResult<Vec<Environment>>;

    /// Conflict on `name` or `tag` when either is taken in the workspace.
    async fn create_environment(
        &self,
        account: &str,
        workspace: &str,
        name: &str,
        tag: &str,
    ) -> StoreResult<Environment>;

    // ── Permission catalog ───────────────────────────────────────────────

    async fn list_permissions(&self, account: &str) -> StoreResult<Vec<CatalogPermission>>;

    /// Conflict on `name` if it exists.
    async fn create_permission(
        &self,
        account: &str,
        name: &str,
        description: Option<&str>,
    ) -> StoreResult<CatalogPermission>;

    /// Refused with [`StoreError::InUse`] while any key holds the permission.
    async fn delete_permission(&self, account: &str, name: &str) -> StoreResult<()>;

    // ── API keys ─────────────────────────────────────────────────────────

    /// Inserts a key. NotFound on `environment` if the workspace has no such
    /// environment, Invalid on `permissions` naming any permission missing
    /// from the catalog, Conflict on `name` if the workspace has a key of
    /// that name.
    async fn create_key(&self, account: &str, new: NewKey) -> StoreResult<ApiKey>;

    async fn list_keys(
        &self,
        account: &str,
        filter: &KeyFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<ApiKey>>;

    async fn get_key(&self, account: &str, id: &str) -> StoreResult<ApiKey>;

    /// Applies the fields set in `patch`, with the same checks as create.
    async fn update_key(&self, account: &str, id: &str, patch: KeyPatch) -> StoreResult<ApiKey>;

    /// Sets the status. A revoked key stays revoked: any change away from
    /// `revoked` is a Conflict on `status`.
    async fn set_key_status(
        &self,
        account: &str,
        id: &str,
        status: keyward_core::KeyStatus,
    ) -> StoreResult<ApiKey>;

    /// Everything verification needs about the key with this hash (hex):
    /// the key, its environment name and its workspace's IP allowlist.
    /// Not scoped: the caller compares the account.
    async fn find_key_for_verification(
        &self,
        hash_hex: &str,
    ) -> StoreResult<Option<VerificationRecord>>;

    /// Records last use for many keys at once (the verify path batches these).
    /// Keys that no longer exist are skipped.
    async fn record_key_usage(&self, usages: &[KeyUsage]) -> StoreResult<()>;

    // ── IP allowlist ─────────────────────────────────────────────────────

    async fn list_allowlist(&self, account: &str) -> StoreResult<Vec<AllowlistEntry>>;

    /// NotFound on `workspace_ids` if any workspace is not the account's.
    async fn create_allowlist_entry(
        &self,
        account: &str,
        new: NewAllowlistEntry,
    ) -> StoreResult<AllowlistEntry>;

    async fn delete_allowlist_entry(&self, account: &str, id: &str) -> StoreResult<()>;

    // ── Idempotency ──────────────────────────────────────────────────────

    /// Claims an idempotency key for a request with this fingerprint.
    async fn begin_idempotent(
        &self,
        account: &str,
        key: &str,
        fingerprint: &str,
    ) -> StoreResult<IdempotencyClaim>;

    /// Stores the response a claimed key must replay (secrets already removed).
    async fn finish_idempotent(
        &self,
        account: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> StoreResult<()>;

    /// Releases a claim whose request failed before changing anything, so
    /// that a retry may run.
    async fn abandon_idempotent(&self, account: &str, key: &str) -> StoreResult<()>;
}
