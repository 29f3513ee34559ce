//! How stored objects look in API responses. Secrets never appear here; the
//! responses that reveal one carry it beside the view, once.

use crate::clock::{from_ms, from_ms_opt};
use keyward_core::{
    AccountPermission, CreditRefill, Credits, KeyKind, KeyStatus, PermissionName, RateLimitPolicy,
    Role, Secret,
};
use keyward_store as store;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// A page of a list: `next_cursor` is `null` on the last page.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> List<T> {
    pub fn from_page<R>(page: store::Page<R>, view: impl Fn(R) -> T) -> Self {
        Self {
            data: page.items.into_iter().map(view).collect(),
            next_cursor: page
                .next_after
                .as_deref()
                .map(crate::extract::encode_cursor),
        }
    }

    pub fn complete(items: impl IntoIterator<Item = T>) -> Self {
        Self {
            data: items.into_iter().collect(),
            next_cursor: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnvironmentView {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    /// The tag keys of this environment carry: `kw_<tag>_…`.
    pub tag: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<store::Environment> for EnvironmentView {
    fn from(e: store::Environment) -> Self {
        Self {
            id: e.id,
            workspace_id: e.workspace_id,
            name: e.name,
            tag: e.tag,
            created_at: from_ms(e.created_at),
        }
    }
}

/// A new key and its secret — the only time the secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub key: KeyView,
    /// Store it now: Keyward keeps only its hash.
    /// `null` in an idempotent replay (`Idempotent-Replayed: true`): the
    /// secret is never stored, so a replay cannot show it again.
    #[serde(serialize_with = "reveal_once")]
    #[schema(value_type = Option<String>, required = true)]
    pub secret: Secret,
}

/// Writes a secret into the one response body that hands it out. The field
/// stays a [`Secret`], so `Debug` of the response (a stray `{:?}` in a log
/// line) prints only its hint.
pub fn reveal_once<S: serde::Serializer>(
    secret: &Secret,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceView {
    pub id: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Present when a single workspace is returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environments: Option<Vec<EnvironmentView>>,
    /// Only in the response that creates the workspace: its "primary"
    /// ingest credentials (Site ID = the key's id) with the secret, once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_credentials: Option<CreatedKey>,
}

impl WorkspaceView {
    pub fn bare(w: store::Workspace) -> Self {
        Self {
            id: w.id,
            name: w.name,
            created_at: from_ms(w.created_at),
            environments: None,
            primary_credentials: None,
        }
    }

    /// The workspace with its environments; `w.primary_key` is ignored, since
    /// only the creating response, which has the secret, shows it.
    pub fn with_environments(w: store::WorkspaceWithEnvironments) -> Self {
        Self {
            environments: Some(
                w.environments
                    .into_iter()
                    .map(EnvironmentView::from)
                    .collect(),
            ),
            ..Self::bare(w.workspace)
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PermissionView {
    #[schema(value_type = String, example = "customers:read")]
    pub name: PermissionName,
    pub description: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<store::CatalogPermission> for PermissionView {
    fn from(p: store::CatalogPermission) -> Self {
        Self {
            name: p.name,
            description: p.description,
            created_at: from_ms(p.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub workspace_id: String,
    pub environment: String,
    pub kind: KeyKind,
    /// First and last characters of the secret, to tell keys apart.
    #[schema(example = "kw_live_AbCd…wxyz")]
    pub hint: String,
    /// `expired` as soon as `expires_at` passes, even before the sweep records it.
    pub status: KeyStatus,
    #[schema(value_type = Vec<String>)]
    pub permissions: Vec<PermissionName>,
    pub customer_id: Option<String>,
    pub rate_limit: Option<RateLimitPolicy>,
    pub allowed_ips: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[schema(value_type = Object)]
    pub meta: serde_json::Map<String, serde_json::Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    pub last_used_ip: Option<String>,
    /// Publishable keys: the web origins allowed to present the key.
    pub allowed_origins: Vec<String>,
    /// Publishable keys only: the key itself, which is public by design.
    pub publishable_key: Option<String>,
    /// After a rotation: the replaced secret, and whether it still works.
    pub rotation: Option<RotationView>,
    /// When the current secret was last reported found in public (GitHub
    /// secret scanning); cleared by a rotation. See `GET /v1/keys/{id}/leaks`.
    #[serde(with = "time::serde::rfc3339::option")]
    pub leaked_at: Option<OffsetDateTime>,
    /// A metered key's credits; `null` for a key without a quota.
    pub credits: Option<CreditsView>,
}

/// A metered key's usage credits.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditsView {
    /// The balance now (a refill due counts as done).
    pub remaining: u64,
    pub refill: Option<CreditRefill>,
    /// When the balance was last refilled or set.
    #[serde(with = "time::serde::rfc3339")]
    pub refilled_at: OffsetDateTime,
}

impl CreditsView {
    fn new(credits: Credits, now_ms: i64) -> Self {
        let now = credits.as_of(now_ms);
        Self {
            remaining: now.remaining,
            refill: now.refill,
            refilled_at: from_ms(now.refilled_at),
        }
    }
}

/// A report of the key's secret found in public, and what Keyward did.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyLeakView {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub reported_at: OffsetDateTime,
    /// Who found it: `github`.
    pub reporter: String,
    /// The public URL it was found at, when the reporter gave one.
    pub location: Option<String>,
    /// The reporter's kind of place: `content`, `commit`, `npm`, ….
    pub found_in: Option<String>,
    /// `current`, or `replaced` for a rotation's replaced secret.
    #[schema(example = "current")]
    pub secret: &'static str,
    /// `revoked`; `grace_ended` (a replaced secret); `flagged` (left
    /// working, see `reason`); `none` (the secret no longer worked).
    #[schema(example = "revoked")]
    pub action: &'static str,
    /// Why the key was only flagged: revoking a workspace's last active
    /// ingest key would stop all its data, so a person replaces it first.
    pub reason: Option<String>,
}

impl From<store::KeyLeak> for KeyLeakView {
    fn from(leak: store::KeyLeak) -> Self {
        Self {
            id: leak.id,
            reported_at: from_ms(leak.reported_at),
            reporter: leak.reporter,
            location: leak.location,
            found_in: leak.found_in,
            secret: if leak.replaced_secret {
                "replaced"
            } else {
                "current"
            },
            action: leak.action.as_str(),
            reason: leak.reason,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotationView {
    /// `true` while the old secret still verifies (the key is "rotating").
    pub in_grace_period: bool,
    pub old_hint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub old_secret_expires_at: OffsetDateTime,
    /// When the old secret was last presented: once this stops moving,
    /// nothing uses it any more.
    #[serde(with = "time::serde::rfc3339::option")]
    pub old_secret_last_used_at: Option<OffsetDateTime>,
}

impl RotationView {
    fn new(r: store::KeyRotation, now_ms: i64) -> Self {
        Self {
            in_grace_period: now_ms < r.expires_at,
            old_hint: r.previous_hint,
            old_secret_expires_at: from_ms(r.expires_at),
            old_secret_last_used_at: from_ms_opt(r.previous_last_used_at),
        }
    }
}

impl KeyView {
    pub fn new(k: store::ApiKey, now_ms: i64) -> Self {
        let status = match k.status {
            KeyStatus::Active if k.expires_at.is_some_and(|at| now_ms >= at) => KeyStatus::Expired,
            other => other,
        };
        Self {
            id: k.id,
            name: k.name,
            workspace_id: k.workspace_id,
            environment: k.environment,
            kind: k.kind,
            hint: k.hint,
            status,
            permissions: k.permissions,
            customer_id: k.customer_id,
            rate_limit: k.rate_limit,
            allowed_ips: k.allowed_ips.iter().map(ToString::to_string).collect(),
            expires_at: from_ms_opt(k.expires_at),
            meta: k.meta,
            created_at: from_ms(k.created_at),
            created_by: k.created_by,
            updated_at: from_ms(k.updated_at),
            last_used_at: from_ms_opt(k.last_used_at),
            last_used_ip: k.last_used_ip,
            allowed_origins: k.allowed_origins,
            publishable_key: k.public_value,
            rotation: k.rotation.map(|r| RotationView::new(r, now_ms)),
            leaked_at: from_ms_opt(k.leaked_at),
            credits: k.credits.map(|c| CreditsView::new(c, now_ms)),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AllowlistEntryView {
    pub id: String,
    /// An address (`203.0.113.7/32`) or range (`10.0.0.0/8`).
    pub address: String,
    pub description: Option<String>,
    pub workspace_ids: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<store::AllowlistEntry> for AllowlistEntryView {
    fn from(e: store::AllowlistEntry) -> Self {
        Self {
            id: e.id,
            address: e.cidr.to_string(),
            description: e.description,
            workspace_ids: e.workspace_ids,
            created_at: from_ms(e.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub id: String,
    pub user_id: String,
    pub email: String,
    pub role: Role,
    /// Explicit grants.
    pub permissions: Vec<AccountPermission>,
    /// What the member holds: everything for owners and admins.
    pub effective_permissions: Vec<AccountPermission>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<store::Member> for MemberView {
    fn from(m: store::Member) -> Self {
        Self {
            effective_permissions: m.effective_permissions(),
            id: m.id,
            user_id: m.user_id,
            email: m.email,
            role: m.role,
            permissions: m.permissions,
            created_at: from_ms(m.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ManagementTokenView {
    pub id: String,
    pub name: String,
    /// The member the token acts for; it never holds more than they do.
    pub member_id: String,
    pub hint: String,
    pub permissions: Vec<AccountPermission>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

impl From<store::ManagementToken> for ManagementTokenView {
    fn from(t: store::ManagementToken) -> Self {
        Self {
            id: t.id,
            name: t.name,
            member_id: t.member_id,
            hint: t.hint,
            permissions: t.permissions,
            created_at: from_ms(t.created_at),
            expires_at: from_ms_opt(t.expires_at),
            last_used_at: from_ms_opt(t.last_used_at),
        }
    }
}

/// Who made a change: the member, the management token they used, and the
/// address the request came from.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActorView {
    pub member_id: Option<String>,
    pub token_id: Option<String>,
    pub ip: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventView {
    pub id: String,
    /// 1, 2, … within the account: the order of the hash chain.
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// All `null` for Keyward's own scheduled work.
    pub actor: ActorView,
    /// `<object>.<verb>`: `account.created`, `workspace.created|updated|deleted`,
    /// `environment.created`, `permission.created|deleted`,
    /// `key.created|updated|enabled|disabled|expired|revoked|rotated|grace_ended|deleted`,
    /// `ip_allowlist.created|deleted`, `integration.created|updated|deleted`,
    /// `member.created|updated|deleted`, `management_token.created|deleted`,
    /// `job.created`, `job.export_downloaded`.
    #[schema(example = "key.updated")]
    pub action: String,
    #[schema(example = "key")]
    pub object_type: String,
    pub object_id: String,
    /// The fields the action changed, before it (never secrets or hashes).
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// The fields the action changed, after it.
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    /// The previous event's `hash` (64 zeros for the first).
    pub prev_hash: String,
    /// SHA-256 of `prev_hash` and this event's canonical form.
    pub hash: String,
}

impl From<store::AuditEvent> for AuditEventView {
    fn from(e: store::AuditEvent) -> Self {
        Self {
            id: e.id,
            seq: e.seq,
            at: from_ms(e.at),
            actor: ActorView {
                member_id: e.actor.member_id,
                token_id: e.actor.token_id,
                ip: e.actor.ip,
            },
            action: e.action,
            object_type: e.object_type,
            object_id: e.object_id,
            before: e.before,
            after: e.after,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

#[cfg(test)]
impl KeyView {
    /// An active secret key with nothing configured, for tests of what
    /// renders a view.
    pub(crate) fn sample() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            id: "key_1".into(),
            name: "k".into(),
            workspace_id: "ws_1".into(),
            environment: "production".into(),
            kind: KeyKind::Secret,
            hint: "kw_live_…".into(),
            status: KeyStatus::Active,
            permissions: Vec::new(),
            customer_id: None,
            rate_limit: None,
            allowed_ips: Vec::new(),
            expires_at: None,
            meta: Default::default(),
            created_at: now,
            created_by: None,
            updated_at: now,
            last_used_at: None,
            last_used_ip: None,
            allowed_origins: Vec::new(),
            publishable_key: None,
            rotation: None,
            leaked_at: None,
            credits: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::{EnvTag, KeyFormat};

    #[test]
    fn a_created_key_shows_its_secret_in_the_body_and_never_in_debug() {
        let tag = EnvTag::parse_environment_tag("live").unwrap();
        let secret = crate::secrets::mint(&KeyFormat::default(), &tag);
        let plaintext = secret.expose().to_owned();
        let created = CreatedKey {
            key: KeyView {
                hint: secret.hint(),
                ..KeyView::sample()
            },
            secret,
        };
        assert!(!format!("{created:?}").contains(&plaintext));
        let body = serde_json::to_value(&created).unwrap();
        assert_eq!(body["secret"], plaintext.as_str());
    }
}
