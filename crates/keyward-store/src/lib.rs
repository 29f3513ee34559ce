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
mod request_logs;
mod sql;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{StoreError, StoreResult};
pub use postgres::ChangeFeed;
pub use records::*;
pub use request_logs::*;

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
///
/// Every method that changes tenant data takes the [`Actor`] behind the
/// change and appends an audit event (see [`AuditEvent`]) to the account's
/// hash chain in the same transaction: the change and its record commit
/// together or not at all.
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
    /// owner's first management token, all in one transaction. Audited as
    /// `account.created`, by the owner.
    async fn bootstrap_account(&self, new: NewAccount) -> StoreResult<Bootstrapped>;

    async fn list_members(&self, account: &str, page: &PageRequest) -> StoreResult<Page<Member>>;

    async fn get_member(&self, account: &str, member_id: &str) -> StoreResult<Member>;

    /// Adds a user (created without a password if the email is new) to the
    /// account. Conflict on `email` if they are a member already.
    async fn create_member(
        &self,
        account: &str,
        actor: &Actor,
        new: NewMember,
    ) -> StoreResult<Member>;

    /// Changes a member's role and grants. Grants are kept only for the
    /// `member` role (owners and admins hold everything), so a change to
    /// owner or admin clears them. Refused with `last_owner` when it would
    /// leave the account without an owner (checked under lock, so two
    /// owners demoting each other cannot both succeed).
    async fn update_member(
        &self,
        account: &str,
        actor: &Actor,
        member_id: &str,
        patch: MemberPatch,
    ) -> StoreResult<Member>;

    /// Removes a member; their management tokens go with them. Refused with
    /// `last_owner` for the account's last owner.
    async fn delete_member(&self, account: &str, actor: &Actor, member_id: &str)
    -> StoreResult<()>;

    // ── Management tokens ────────────────────────────────────────────────

    async fn create_management_token(
        &self,
        account: &str,
        actor: &Actor,
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

    async fn delete_management_token(
        &self,
        account: &str,
        actor: &Actor,
        id: &str,
    ) -> StoreResult<()>;

    /// Finds the token with this SHA-256 hash (hex) together with its
    /// member's current role and grants. Not scoped: this is how the account
    /// of a request is found.
    async fn find_token_by_hash(&self, hash_hex: &str) -> StoreResult<Option<TokenPrincipal>>;

    /// Records last use for many tokens at once; never moves a last use
    /// backwards. Tokens that no longer exist are skipped.
    async fn record_token_usage(&self, usages: &[TokenUsage]) -> StoreResult<()>;

    // ── Console sign-in ──────────────────────────────────────────────────

    /// The user with this (normalized) email, their password hash and their
    /// memberships; `None` if there is no such user. Not scoped by account:
    /// this is how signing in finds the account.
    async fn find_user_for_sign_in(&self, email: &str) -> StoreResult<Option<SignInUser>>;

    /// Starts a console session for a member (audited `session.created`);
    /// the account's expired sessions are dropped on the way.
    async fn create_session(
        &self,
        account: &str,
        actor: &Actor,
        new: NewSession,
    ) -> StoreResult<Session>;

    /// The unexpired session with this hash and its member as they are now.
    /// `None` once it expired, was ended, or its member was removed.
    async fn find_session(&self, hash_hex: &str, now: i64)
    -> StoreResult<Option<SessionPrincipal>>;

    /// Ends the session with this hash (signing out), audited
    /// `session.ended`; unknown hashes are ignored.
    async fn delete_session(&self, hash_hex: &str) -> StoreResult<()>;

    /// Adds a member like [`Store::create_member`] and, in the same
    /// transaction, when their user has no password yet, a one-time
    /// invitation (SHA-256 `hash_hex` of its secret) to choose one. `None`
    /// for a person who already signs in elsewhere. Audited
    /// `member.created`, then `invitation.created`.
    async fn invite_member(
        &self,
        account: &str,
        actor: &Actor,
        new: NewMember,
        invitation: NewInvitation,
    ) -> StoreResult<(Member, Option<Invitation>)>;

    /// Consumes the unexpired invitation with this hash and sets its user's
    /// first password; `None` if the invitation is unknown, used, expired,
    /// or the user has set a password meanwhile. Audited
    /// `invitation.accepted`, as the member.
    async fn accept_invitation(
        &self,
        hash_hex: &str,
        password_hash: &str,
        now: i64,
    ) -> StoreResult<Option<Member>>;

    // ── Workspaces and environments ──────────────────────────────────────

    /// Creates a workspace with the given environments in one transaction.
    async fn create_workspace(
        &self,
        account: &str,
        actor: &Actor,
        new: NewWorkspace,
    ) -> StoreResult<WorkspaceWithEnvironments>;

    async fn list_workspaces(
        &self,
        account: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<Workspace>>;

    async fn get_workspace(&self, account: &str, id: &str) -> StoreResult<Workspace>;

    async fn rename_workspace(
        &self,
        account: &str,
        actor: &Actor,
        id: &str,
        name: &str,
    ) -> StoreResult<Workspace>;

    /// Deletes the workspace, its environments, its keys and its allowlist
    /// grants.
    async fn delete_workspace(&self, account: &str, actor: &Actor, id: &str) -> StoreResult<()>;

    async fn list_environments(
        &self,
        account: &str,
        workspace: &str,
    ) -> StoreResult<Vec<Environment>>;

    /// Conflict on `name` or `tag` when either is taken in the workspace.
    async fn create_environment(
        &self,
        account: &str,
        actor: &Actor,
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
        actor: &Actor,
        name: &str,
        description: Option<&str>,
    ) -> StoreResult<CatalogPermission>;

    /// Refused with [`StoreError::InUse`] while any key holds the permission.
    async fn delete_permission(&self, account: &str, actor: &Actor, name: &str) -> StoreResult<()>;

    // ── API keys ─────────────────────────────────────────────────────────

    /// Inserts a key. NotFound on `environment` if the workspace has no such
    /// environment, Invalid on `permissions` naming any permission missing
    /// from the catalog, Conflict on `name` if the workspace has a key of
    /// that name.
    async fn create_key(&self, account: &str, actor: &Actor, new: NewKey) -> StoreResult<ApiKey>;

    async fn list_keys(
        &self,
        account: &str,
        filter: &KeyFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<ApiKey>>;

    async fn get_key(&self, account: &str, id: &str) -> StoreResult<ApiKey>;

    /// Applies the fields set in `patch`, with the same checks as create.
    async fn update_key(
        &self,
        account: &str,
        actor: &Actor,
        id: &str,
        patch: KeyPatch,
    ) -> StoreResult<ApiKey>;

    /// Sets the status. A revoked key stays revoked: any change away from
    /// `revoked` is a Conflict on `status`.
    async fn set_key_status(
        &self,
        account: &str,
        actor: &Actor,
        id: &str,
        status: keyward_core::KeyStatus,
    ) -> StoreResult<ApiKey>;

    /// Creates keys whose secrets were issued elsewhere, from their hashes
    /// (`NewKey::hash_hex`), all or none: moving to Keyward without
    /// re-issuing. Each is audited as `key.imported`. A hash some key's
    /// current or replaced secret already has is a Conflict on `hash`; an
    /// item's error is `InItem { list: "keys", index }`.
    async fn import_keys(
        &self,
        account: &str,
        actor: &Actor,
        keys: Vec<NewKey>,
    ) -> StoreResult<Vec<ApiKey>>;

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

    /// Takes `cost` from a metered key's credits if its balance covers it
    /// (and is above zero), in one atomic step that concurrent draws — on
    /// any node — cannot overdraw. A balance whose refill period began
    /// since its last refill, as of `at`, is refilled first. Scoped to the
    /// account; `None` when the key is not metered (or not there). Not
    /// audited: it is a verification, logged as one.
    async fn draw_credits(
        &self,
        account: &str,
        key_id: &str,
        cost: u64,
        at: i64,
    ) -> StoreResult<Option<CreditDraw>>;

    /// Adds to or sets a metered key's balance (a refill due is applied
    /// first), auditing `key.credits_changed` with the balance before and
    /// after. Conflict on `credits` when the key is not metered.
    async fn change_credits(
        &self,
        account: &str,
        actor: &Actor,
        key_id: &str,
        change: CreditChange,
    ) -> StoreResult<ApiKey>;

    /// A secret found in public (GitHub secret scanning): finds the key
    /// whose current or rotation-replaced secret has `report.hash_hex`, in
    /// any account (the reporter cannot know which). A current secret's key
    /// is revoked — integrations using it or not —, except a workspace's
    /// last active ingest key, which is flagged with the reason; a replaced
    /// secret's grace period is ended. Marks the key `leaked_at` (for a
    /// current secret), keeps the report and audits `key.leaked`, all in
    /// one transaction. `None`, changing nothing, when no key has it.
    async fn report_leaked_key(
        &self,
        actor: &Actor,
        report: LeakReport,
    ) -> StoreResult<Option<KeyLeak>>;

    /// A management token's secret found in public: deletes the token, in
    /// any account, auditing `management_token.leaked` with the report.
    /// `None`, changing nothing, when no token has the secret.
    async fn report_leaked_token(
        &self,
        actor: &Actor,
        report: LeakReport,
    ) -> StoreResult<Option<LeakedToken>>;

    /// The key's leak reports, newest first. NotFound for another
    /// account's key.
    async fn list_key_leaks(&self, account: &str, key_id: &str) -> StoreResult<Vec<KeyLeak>>;

    // ── IP allowlist ─────────────────────────────────────────────────────

    async fn list_allowlist(&self, account: &str) -> StoreResult<Vec<AllowlistEntry>>;

    /// NotFound on `workspace_ids` if any workspace is not the account's.
    async fn create_allowlist_entry(
        &self,
        account: &str,
        actor: &Actor,
        new: NewAllowlistEntry,
    ) -> StoreResult<AllowlistEntry>;

    async fn delete_allowlist_entry(
        &self,
        account: &str,
        actor: &Actor,
        id: &str,
    ) -> StoreResult<()>;

    // ── Audit log ────────────────────────────────────────────────────────

    /// The account's audit events matching `filter`, in chain order or
    /// newest first.
    async fn list_audit_events(
        &self,
        account: &str,
        filter: &AuditFilter,
        order: ListOrder,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditEvent>>;

    /// Walks the account's audit chain, recomputing every hash, and reports
    /// the first event that was changed, removed or re-linked.
    /// `checkpoint`: a `seq` whose event the report should name, to compare
    /// with a link recorded earlier.
    async fn verify_audit_chain(
        &self,
        account: &str,
        checkpoint: Option<i64>,
    ) -> StoreResult<AuditChainReport>;

    /// Every account's id, for operator tools that walk all tenants (such as
    /// `keyward audit verify`). Not scoped: no request may reach it.
    async fn list_account_ids(&self) -> StoreResult<Vec<String>>;

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

    // ── Request logs and change notifications ────────────────────────────

    /// Appends a batch of verification outcomes in one transaction, all or
    /// none (a few statements per batch: the verify path batches these,
    /// never writing per request). Each entry gets a new `log_<ulid>` id,
    /// increasing in the batch's order; a batch written again after a
    /// failure gets new ones.
    async fn insert_request_logs(&self, batch: &RequestLogBatch) -> StoreResult<()>;

    /// The account's request logs matching `filter`, newest first; `after`
    /// is the id of the last log of the previous page.
    async fn list_request_logs(
        &self,
        account: &str,
        filter: &RequestLogFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<RequestLog>>;

    /// Deletes the logs of every account written before `before` (Unix ms);
    /// returns how many. Not scoped: the retention purge is an operator task.
    async fn purge_request_logs(&self, before: i64) -> StoreResult<u64>;

    /// A feed of changes committed by anyone sharing this store, already
    /// listening when it returns, or `None` when only this process can
    /// change the store (SQLite) and local invalidation is enough.
    async fn change_feed(&self) -> StoreResult<Option<ChangeFeed>> {
        Ok(None)
    }

    // ── Key lifecycle (seeds 000, 001, 003, 004) ─────────────────────────

    /// Issues a new secret for the key — same id, name, permissions and
    /// configuration. The replaced secret verifies until the grace period
    /// ends (at once without one), then answers `key_expired`; a secret
    /// replaced by an earlier rotation is forgotten. Conflict on `status` for
    /// a revoked key.
    async fn rotate_key(
        &self,
        account: &str,
        actor: &Actor,
        rotation: KeyReplacement,
    ) -> StoreResult<ApiKey>;

    /// Ends a rotation's grace period now. Conflict when none is running.
    async fn end_key_grace(&self, account: &str, actor: &Actor, id: &str) -> StoreResult<ApiKey>;

    /// Revokes for good. Refused (`last_ingest_key`) for a workspace's last
    /// active ingest key, and (`key_in_use`, naming them) while integrations
    /// use the key unless `force`. Revoking a revoked key changes nothing.
    async fn revoke_key(
        &self,
        account: &str,
        actor: &Actor,
        id: &str,
        force: bool,
    ) -> StoreResult<ApiKey>;

    /// Deletes for good, with the same refusals as revoke, once
    /// `confirm_name` repeats the key's name (Invalid on `confirm_name`).
    /// A forced delete leaves the integrations that used it without a key.
    async fn delete_key(
        &self,
        account: &str,
        actor: &Actor,
        deletion: KeyDeletion,
    ) -> StoreResult<()>;

    // ── Integrations ─────────────────────────────────────────────────────

    async fn list_integrations(
        &self,
        account: &str,
        workspace: &str,
    ) -> StoreResult<Vec<Integration>>;

    async fn get_integration(&self, account: &str, id: &str) -> StoreResult<Integration>;

    /// NotFound on `key_id` unless the key is in the same workspace; Invalid
    /// on `key_id` for a revoked key or a kind the integration cannot use.
    async fn create_integration(
        &self,
        account: &str,
        actor: &Actor,
        new: NewIntegration,
    ) -> StoreResult<Integration>;

    async fn update_integration(
        &self,
        account: &str,
        actor: &Actor,
        id: &str,
        patch: IntegrationPatch,
    ) -> StoreResult<Integration>;

    async fn delete_integration(&self, account: &str, actor: &Actor, id: &str) -> StoreResult<()>;

    // ── Background jobs ──────────────────────────────────────────────────

    /// Queues a job: an account's (audited, visible in its API), or with
    /// `account` `None` the deployment's own scheduled work.
    async fn enqueue_job(
        &self,
        account: Option<&str>,
        actor: &Actor,
        new: NewJob,
    ) -> StoreResult<Job>;

    async fn list_jobs(
        &self,
        account: &str,
        order: ListOrder,
        page: &PageRequest,
    ) -> StoreResult<Page<Job>>;

    async fn get_job(&self, account: &str, id: &str) -> StoreResult<Job>;

    /// The worker's side: takes the oldest queued job of any account.
    async fn claim_job(&self) -> StoreResult<Option<Job>>;

    /// Progress of a running job; also its heartbeat.
    async fn report_job_progress(&self, id: &str, done: u64, total: Option<u64>)
    -> StoreResult<()>;

    async fn finish_job(&self, id: &str, outcome: JobOutcome) -> StoreResult<()>;

    /// Queues again (or fails, after too many attempts) the running jobs
    /// whose heartbeat is older than `stale_before`: their worker died.
    async fn recover_stale_jobs(&self, stale_before: i64) -> StoreResult<u64>;

    /// Whether a job of this kind is queued or running.
    async fn job_pending(&self, kind: &str) -> StoreResult<bool>;

    /// Rotates one key for the bulk-rotation job `rotation.job_id` and, in
    /// the same transaction, records the new secret — encrypted by the
    /// caller, never in the clear — under the job (see [`JobSecret`]). The
    /// record is what makes a job safe to resume after its worker died: a
    /// second rotation would cut the key's original secret off at once, so
    /// a key the job has recorded is never rotated by that job again.
    ///
    /// - The job has recorded this key already (an earlier attempt, or a
    ///   second worker racing for the same job): nothing changes, the offered
    ///   replacement is discarded and the earlier record comes back as
    ///   [`JobRotation::AlreadyRotated`]. Checked with the key's row locked.
    /// - Otherwise the key is rotated exactly as by
    ///   [`rotate_key`](Self::rotate_key) — same id, name, permissions and
    ///   configuration; the replaced secret verifies until the grace period
    ///   ends; audited as `key.rotated`, with the job's id in the event — the
    ///   record inserted, and [`JobRotation::Rotated`] returned.
    ///
    /// Only `active` and `inactive` keys are rotated: Conflict on `status`
    /// for a revoked key, or an expired one (by status, or past its
    /// `expires_at` before the sweep marked it). NotFound for a job or key
    /// that is not the account's.
    async fn rotate_key_for_job(
        &self,
        account: &str,
        actor: &Actor,
        rotation: JobKeyReplacement,
    ) -> StoreResult<JobRotation>;

    /// The secrets a bulk-rotation job recorded, by key id (still encrypted
    /// as the job sealed them). NotFound when the job is not the account's;
    /// empty for a job of another kind.
    async fn list_job_secrets(
        &self,
        account: &str,
        job_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<JobSecret>>;

    /// Marks up to `limit` keys past their expiry `expired` (audited as the
    /// system); returns how many.
    async fn expire_due_keys(&self, limit: u32) -> StoreResult<u64>;

    // ── Log exports ──────────────────────────────────────────────────────

    /// Deletes the parts an export job wrote so far: a resumed job starts
    /// its file over.
    async fn clear_job_export(&self, account: &str, job_id: &str) -> StoreResult<()>;

    /// Stores part `part` (0, 1, …) of the file an export job writes.
    async fn add_job_export_part(
        &self,
        account: &str,
        job_id: &str,
        part: u32,
        data: &[u8],
    ) -> StoreResult<()>;

    /// The first part of the account's export job's file, for a download
    /// that starts: audited (`job.export_downloaded`, by `actor`) in the
    /// same transaction, since the file holds the account's request logs.
    /// `None` (and no event) once purged and for another account's job.
    async fn open_job_export(
        &self,
        account: &str,
        actor: &Actor,
        job_id: &str,
    ) -> StoreResult<Option<Vec<u8>>>;

    /// Part `part` of the account's export job's file; `None` past its last
    /// part, once purged, and for another account's job.
    async fn job_export_part(
        &self,
        account: &str,
        job_id: &str,
        part: u32,
    ) -> StoreResult<Option<Vec<u8>>>;

    /// Deletes export parts written before `before` (Unix ms), in every
    /// account; returns how many.
    async fn purge_job_exports(&self, before: i64) -> StoreResult<u64>;
}
