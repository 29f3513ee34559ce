//! The rows the store reads and writes, in domain types.

use ipnet::IpNet;
use keyward_core::{
    AccountPermission, CreditRefill, Credits, KeyKind, KeyStatus, PermissionName, RateLimitPolicy,
    Role,
};

/// Cursor pagination: up to `limit` items with ids after `after`.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: u32,
    /// The id of the last item of the previous page.
    pub after: Option<String>,
}

/// Which end of a list its first page starts from. A cursor marks a place,
/// so pages carry on in the order the first was read in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListOrder {
    /// Creation order: for the audit log, the order of its hash chain.
    #[default]
    OldestFirst,
    /// The latest first: what a person looking at activity wants to see.
    NewestFirst,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The id to pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub account_id: String,
    pub user_id: String,
    pub email: String,
    pub role: Role,
    /// Explicit grants; owners and admins hold every permission regardless.
    pub permissions: Vec<AccountPermission>,
    pub created_at: i64,
}

impl Member {
    pub fn effective_permissions(&self) -> Vec<AccountPermission> {
        AccountPermission::effective_for(self.role, &self.permissions)
    }
}

pub struct NewAccount {
    pub name: String,
    pub owner_email: String,
    /// An Argon2id PHC string; never the password.
    pub owner_password_hash: String,
    pub workspace_name: String,
    pub environments: Vec<(String, String)>,
    pub token_name: String,
    pub token_hash_hex: String,
    pub token_hint: String,
    /// The first workspace's "primary" credentials (see `NewWorkspace`).
    pub primary_key: Option<NewKey>,
}

#[derive(Debug, Clone)]
pub struct Bootstrapped {
    pub account: Account,
    pub owner: Member,
    pub workspace: WorkspaceWithEnvironments,
    pub token: ManagementToken,
}

pub struct NewMember {
    pub email: String,
    pub role: Role,
    pub permissions: Vec<AccountPermission>,
}

/// A change to a member: `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct MemberPatch {
    pub role: Option<Role>,
    pub permissions: Option<Vec<AccountPermission>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementToken {
    pub id: String,
    pub account_id: String,
    /// The member the token acts for; it never holds more than they do.
    pub member_id: String,
    pub name: String,
    pub hint: String,
    pub permissions: Vec<AccountPermission>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

pub struct NewManagementToken {
    pub member_id: String,
    pub name: String,
    pub hash_hex: String,
    pub hint: String,
    pub permissions: Vec<AccountPermission>,
    pub expires_at: Option<i64>,
}

/// A management token with the member it acts for, as authentication needs.
#[derive(Debug, Clone)]
pub struct TokenPrincipal {
    pub token: ManagementToken,
    pub member: Member,
}

impl TokenPrincipal {
    /// What requests made with this token may do: the token's own
    /// permissions, cut down to what its member holds now — so demoting or
    /// removing a member also limits their tokens at once.
    pub fn effective_permissions(&self) -> Vec<AccountPermission> {
        let held = self.member.effective_permissions();
        self.token
            .permissions
            .iter()
            .copied()
            .filter(|p| held.contains(p))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub tag: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct WorkspaceWithEnvironments {
    pub workspace: Workspace,
    pub environments: Vec<Environment>,
    /// The "primary" credentials created with the workspace, if asked for.
    pub primary_key: Option<ApiKey>,
}

pub struct NewWorkspace {
    pub name: String,
    /// `(name, tag)` pairs.
    pub environments: Vec<(String, String)>,
    /// Seed 000's default "primary" credentials, created in the same
    /// transaction so that no workspace exists without them. Its
    /// `workspace_id` is filled in with the new workspace's.
    pub primary_key: Option<NewKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogPermission {
    pub name: PermissionName,
    pub description: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub account_id: String,
    pub workspace_id: String,
    /// The environment's name (`production`).
    pub environment: String,
    pub kind: KeyKind,
    pub name: String,
    /// `kw_live_AbCd…wxyz`: enough to tell keys apart, useless to an attacker.
    pub hint: String,
    pub status: KeyStatus,
    /// Sorted and de-duplicated.
    pub permissions: Vec<PermissionName>,
    pub customer_id: Option<String>,
    pub rate_limit: Option<RateLimitPolicy>,
    pub allowed_ips: Vec<IpNet>,
    pub expires_at: Option<i64>,
    /// A JSON object, returned on verify.
    pub meta: serde_json::Map<String, serde_json::Value>,
    pub created_at: i64,
    /// The member id of whoever created it.
    pub created_by: Option<String>,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    pub last_used_ip: Option<String>,
    /// Publishable keys: the web origins allowed to present the key.
    pub allowed_origins: Vec<String>,
    /// Publishable keys only: the key itself, public by design (it is
    /// embedded in web pages), kept to render snippets. `None` for every
    /// other kind, whose secrets are never stored.
    pub public_value: Option<String>,
    /// Set from a rotation until the next one: the replaced secret.
    pub rotation: Option<KeyRotation>,
    /// When the current secret was last reported found in public; a
    /// rotation clears it. See [`KeyLeak`].
    pub leaked_at: Option<i64>,
    /// `Some` for a metered key: its balance as of the read. Verification
    /// draws on it in the store ([`crate::Store::draw_credits`]), never
    /// from this copy.
    pub credits: Option<Credits>,
}

/// A key's credits as a create or update sets them: the balance starts at
/// `remaining`, and the refill clock at the time of the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditSetting {
    pub remaining: u64,
    pub refill: Option<CreditRefill>,
}

impl CreditSetting {
    /// The credits this setting stores when written at `now`.
    pub fn starting_at(self, now: i64) -> Credits {
        Credits {
            remaining: self.remaining,
            refill: self.refill,
            refilled_at: now,
        }
    }
}

/// A change to a metered key's balance, from the API rather than a
/// verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditChange {
    /// Adds to the balance, or takes from it when negative (never below 0).
    Add(i64),
    Set(u64),
}

/// What a verification's draw on a metered key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditDraw {
    /// Whether the balance covered the cost (and the cost was taken).
    pub allowed: bool,
    /// The balance after the draw, or — refused — the balance it found.
    pub remaining: u64,
}

/// The secret a rotation replaced. It verifies until `expires_at`; after
/// that it answers `key_expired` until the key is rotated again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotation {
    pub previous_hint: String,
    pub expires_at: i64,
    pub previous_last_used_at: Option<i64>,
}

/// A rotation: the new secret and how long the replaced one keeps working.
pub struct KeyReplacement {
    pub key_id: String,
    pub hash_hex: String,
    pub hint: String,
    /// The new key itself, for publishable keys only (see `ApiKey::public_value`).
    pub public_value: Option<String>,
    /// 0 stops the replaced secret at once; at most 7 days.
    pub grace_ms: i64,
}

/// A deletion: the name repeated, and whether to go ahead although
/// integrations use the key.
pub struct KeyDeletion {
    pub key_id: String,
    pub confirm_name: String,
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integration {
    pub id: String,
    pub account_id: String,
    pub workspace_id: String,
    pub name: String,
    pub kind: keyward_core::IntegrationKind,
    /// `None` after a forced delete removed the key it used.
    pub key_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub struct NewIntegration {
    pub workspace_id: String,
    pub name: String,
    pub kind: keyward_core::IntegrationKind,
    pub key_id: String,
}

#[derive(Default)]
pub struct IntegrationPatch {
    pub name: Option<String>,
    pub key_id: Option<String>,
}

pub struct NewKey {
    pub workspace_id: String,
    pub environment: String,
    pub kind: KeyKind,
    pub name: String,
    pub hash_hex: String,
    pub hint: String,
    pub permissions: Vec<PermissionName>,
    pub customer_id: Option<String>,
    pub rate_limit: Option<RateLimitPolicy>,
    pub allowed_ips: Vec<IpNet>,
    pub expires_at: Option<i64>,
    pub meta: serde_json::Map<String, serde_json::Value>,
    pub created_by: Option<String>,
    pub allowed_origins: Vec<String>,
    pub public_value: Option<String>,
    pub credits: Option<CreditSetting>,
}

/// A partial update: `None` leaves a field alone; `Some(None)` clears an
/// optional field.
#[derive(Default)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub permissions: Option<Vec<PermissionName>>,
    pub customer_id: Option<Option<String>>,
    pub rate_limit: Option<Option<RateLimitPolicy>>,
    pub allowed_ips: Option<Vec<IpNet>>,
    pub expires_at: Option<Option<i64>>,
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
    pub allowed_origins: Option<Vec<String>>,
    /// `Some(None)` stops metering the key.
    pub credits: Option<Option<CreditSetting>>,
}

#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    pub workspace_id: Option<String>,
    pub environment: Option<String>,
    pub status: Option<KeyStatus>,
    pub kind: Option<KeyKind>,
}

/// A key as the verify path sees it.
#[derive(Debug, Clone)]
pub struct VerificationRecord {
    pub key: ApiKey,
    /// The key's workspace's allowlist: every range granted to it.
    pub workspace_allowlist: Vec<IpNet>,
    /// `Some(until)` when the presented secret is the one a rotation
    /// replaced: it verifies until then and is expired after.
    pub replaced_secret_expires_at: Option<i64>,
}

/// A management token's latest use, recorded in batches like a key's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUsage {
    /// Scopes the write: a use only ever touches a token of this account.
    pub account_id: String,
    pub token_id: String,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsage {
    /// Scopes the write like every other: a use only ever touches a key of
    /// the account it was verified for.
    pub account_id: String,
    pub key_id: String,
    /// Whether the secret used was the one a rotation replaced, whose last
    /// use is kept apart so users can see when nothing uses it any more.
    pub replaced_secret: bool,
    pub at: i64,
    pub ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowlistEntry {
    pub id: String,
    pub account_id: String,
    pub cidr: IpNet,
    pub description: Option<String>,
    /// Sorted.
    pub workspace_ids: Vec<String>,
    pub created_at: i64,
}

pub struct NewAllowlistEntry {
    pub cidr: IpNet,
    pub description: Option<String>,
    pub workspace_ids: Vec<String>,
}

/// The state of an idempotency key when a request claims it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// First use: run the request, then `finish_idempotent`.
    Claimed,
    /// Another request with this key is still running.
    InProgress,
    /// Used before by a request with another fingerprint.
    Mismatch,
    /// Done before: replay this response.
    Completed { status: u16, body: String },
}

/// Who did something, as the audit log records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// The member acting (directly, or through one of their tokens).
    pub member_id: Option<String>,
    /// The management token the request carried, if any.
    pub token_id: Option<String>,
    /// The address the request came from.
    pub ip: Option<String>,
}

impl Actor {
    /// Keyward itself: scheduled work that no request started.
    pub fn system() -> Self {
        Self::default()
    }
}

/// One entry of an account's audit log. `before` / `after` hold the fields
/// that matter to the action (never hashes or secrets; hints are fine).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub id: String,
    pub account_id: String,
    /// 1, 2, … within the account: the order of the hash chain.
    pub seq: i64,
    pub at: i64,
    pub actor: Actor,
    /// `key.created`, `workspace.deleted`, …
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    /// The previous event's `hash`; 64 zeros for the account's first event.
    pub prev_hash: String,
    /// SHA-256 (hex) of `prev_hash` and the canonical form of the event.
    pub hash: String,
}

/// Which audit events to list; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub object_id: Option<String>,
    pub actor_member_id: Option<String>,
    /// Inclusive lower bound on `at` (Unix ms).
    pub from: Option<i64>,
    /// Exclusive upper bound on `at` (Unix ms).
    pub to: Option<i64>,
}

/// The outcome of checking one account's audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditChainReport {
    pub account_id: String,
    /// Events checked (up to and including a broken link).
    pub events: u64,
    /// The first event that does not chain, if any.
    pub broken: Option<BrokenLink>,
    /// The last event checked while the chain held: its head when intact.
    pub head: Option<ChainLink>,
    /// The event at the `seq` the check was asked about, if the chain
    /// reached it intact.
    pub checkpoint: Option<ChainLink>,
}

/// An event's place in its account's chain. Its `hash` covers every event
/// before it, so a link recorded outside Keyward (the head, say, printed by
/// `keyward audit verify`) lets a later check prove that nothing up to it
/// was changed or removed — the one tampering the chain alone cannot show
/// is the removal of its newest events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    pub seq: i64,
    pub hash: String,
}

/// Where an audit chain breaks and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    pub seq: i64,
    pub event_id: String,
    pub reason: String,
}

/// A scanner's report that a secret was found in public, as GitHub's secret
/// scanning sends it. Only the secret's hash reaches the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakReport {
    /// SHA-256 (hex) of the secret found.
    pub hash_hex: String,
    /// Who found it: `github`.
    pub reporter: String,
    /// The public URL it was found at, when the reporter gives one.
    pub location: Option<String>,
    /// The reporter's kind of place: `content`, `commit`, `npm`, ….
    pub found_in: Option<String>,
}

/// What Keyward did about a leaked secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakAction {
    /// The key was revoked: the secret is anyone's now.
    Revoked,
    /// A rotation's replaced secret leaked: its grace period was ended.
    GraceEnded,
    /// Left working for a person to act on, for the reason given (the
    /// workspace's last active ingest key: revoking it would stop all data).
    Flagged,
    /// Nothing to do: the secret no longer verifies.
    None,
}

impl LeakAction {
    pub fn as_str(self) -> &'static str {
        match self {
            LeakAction::Revoked => "revoked",
            LeakAction::GraceEnded => "grace_ended",
            LeakAction::Flagged => "flagged",
            LeakAction::None => "none",
        }
    }

    pub fn parse(s: &str) -> Result<Self, keyward_core::InvalidValue> {
        [
            LeakAction::Revoked,
            LeakAction::GraceEnded,
            LeakAction::Flagged,
            LeakAction::None,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
        .ok_or_else(|| {
            keyward_core::InvalidValue::new("must be one of revoked, grace_ended, flagged, none")
        })
    }
}

/// One report of a key's secret found in public, and what was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLeak {
    pub id: String,
    pub account_id: String,
    pub key_id: String,
    pub reported_at: i64,
    pub reporter: String,
    pub location: Option<String>,
    pub found_in: Option<String>,
    /// The secret a rotation replaced leaked, not the current one.
    pub replaced_secret: bool,
    pub action: LeakAction,
    /// Why the key was only flagged.
    pub reason: Option<String>,
}

/// A management token deleted because its secret was found in public.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakedToken {
    pub account_id: String,
    pub token_id: String,
}

/// The state of a background job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Result<Self, keyward_core::InvalidValue> {
        [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Succeeded,
            JobStatus::Failed,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| {
            keyward_core::InvalidValue::new("must be one of queued, running, succeeded, failed")
        })
    }
}

/// Long work done by the worker: what it is, how far it got, how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    /// `None` for the deployment's own scheduled work.
    pub account_id: Option<String>,
    /// `expire_keys`, `purge_request_logs`, `disable_keys`, `revoke_keys`,
    /// `rotate_keys`.
    pub kind: String,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub status: JobStatus,
    pub progress_done: u64,
    pub progress_total: Option<u64>,
    pub result: Option<serde_json::Map<String, serde_json::Value>>,
    pub error: Option<String>,
    pub attempts: u32,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub heartbeat_at: Option<i64>,
    pub finished_at: Option<i64>,
}

pub struct NewJob {
    pub kind: String,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub created_by: Option<String>,
}

/// A rotation done by a bulk-rotation job: the replacement as for a single
/// rotation, and the new secret already encrypted by the caller for the
/// job's recipient. The store never sees the secret itself.
pub struct JobKeyReplacement {
    pub job_id: String,
    pub replacement: KeyReplacement,
    /// Opaque to the store (an ASCII-armored age file, from the server).
    pub ciphertext: String,
}

/// One key a bulk-rotation job rotated, recorded in the rotation's own
/// transaction: what the caller needs to install the new secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSecret {
    pub job_id: String,
    pub key_id: String,
    /// The key's name when it was rotated.
    pub key_name: String,
    /// The new secret's hint.
    pub hint: String,
    /// The new secret, encrypted to the job's recipient.
    pub ciphertext: String,
    /// Until when the replaced secret keeps working.
    pub old_secret_expires_at: i64,
    /// When the key was rotated.
    pub created_at: i64,
}

/// What [`crate::Store::rotate_key_for_job`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobRotation {
    /// The key was rotated now.
    Rotated(JobSecret),
    /// The job had rotated this key before (an earlier attempt of the same
    /// job): nothing changed, and this is what it recorded then.
    AlreadyRotated(JobSecret),
}

impl JobRotation {
    pub fn secret(&self) -> &JobSecret {
        match self {
            JobRotation::Rotated(s) | JobRotation::AlreadyRotated(s) => s,
        }
    }
}

/// How a job ended.
pub enum JobOutcome {
    Succeeded(serde_json::Map<String, serde_json::Value>),
    Failed(String),
}

/// What signing in to the console needs to know of a user.
#[derive(Clone)]
pub struct SignInUser {
    pub user_id: String,
    /// Argon2id PHC string; `None` until the user accepts an invitation.
    pub password_hash: Option<String>,
    /// The accounts the user belongs to, oldest membership first.
    pub memberships: Vec<Member>,
}

impl std::fmt::Debug for SignInUser {
    // The password hash stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInUser")
            .field("user_id", &self.user_id)
            .field("has_password", &self.password_hash.is_some())
            .field("memberships", &self.memberships.len())
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct NewSession {
    pub member_id: String,
    /// SHA-256 of the secret in the browser's cookie, hex.
    pub hash_hex: String,
    pub expires_at: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub account_id: String,
    pub member_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A live console session with its member as they are now (role and grants
/// are read on every request, so a change applies at once).
#[derive(Debug, Clone)]
pub struct SessionPrincipal {
    pub session: Session,
    pub member: Member,
}

/// The secret's hash and the deadline of a new invitation.
#[derive(Debug, Clone)]
pub struct NewInvitation {
    pub hash_hex: String,
    pub expires_at: i64,
}

/// A one-time link for a member without a password to set one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub id: String,
    pub account_id: String,
    pub member_id: String,
    pub expires_at: i64,
}
