//! The rows the store reads and writes, in domain types.

use ipnet::IpNet;
use keyward_core::{AccountPermission, KeyKind, KeyStatus, PermissionName, RateLimitPolicy, Role};

/// Cursor pagination: up to `limit` items with ids after `after`.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: u32,
    /// The id of the last item of the previous page.
    pub after: Option<String>,
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
}

pub struct NewWorkspace {
    pub name: String,
    /// `(name, tag)` pairs.
    pub environments: Vec<(String, String)>,
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
}

#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    pub workspace_id: Option<String>,
    pub environment: Option<String>,
    pub status: Option<KeyStatus>,
}

/// A key as the verify path sees it.
#[derive(Debug, Clone)]
pub struct VerificationRecord {
    pub key: ApiKey,
    /// The key's workspace's allowlist: every range granted to it.
    pub workspace_allowlist: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsage {
    /// Scopes the write like every other: a use only ever touches a key of
    /// the account it was verified for.
    pub account_id: String,
    pub key_id: String,
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
