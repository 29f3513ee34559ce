//! The domain vocabulary shared by every layer: roles, statuses, kinds,
//! permission names and the small value types that carry validation rules.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a value was refused. `field` is filled in by the caller that knows
/// where the value came from; the message never contains secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidValue {
    pub message: String,
}

impl InvalidValue {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// A member's role in an account. Owners and admins hold every account
/// permission; plain members hold only the permissions granted to them.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Owner, Role::Admin, Role::Member];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| InvalidValue::new("must be one of owner, admin, member"))
    }
}

/// Account-level permissions: what a member or a management token may do to
/// the account itself (as opposed to the permissions carried by API keys,
/// which belong to the platform's own API and live in each account's catalog).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AccountPermission {
    /// Workspaces, environments, keys, the permission catalog, the IP allowlist
    /// and integrations (seed 001's "Manage API credentials").
    #[serde(rename = "manage_api_credentials")]
    ManageApiCredentials,
    /// Members and management tokens.
    #[serde(rename = "manage_members")]
    ManageMembers,
    /// Calling `POST /v1/verify`.
    #[serde(rename = "keys:verify")]
    VerifyKeys,
}

impl AccountPermission {
    pub const ALL: [AccountPermission; 3] = [
        AccountPermission::ManageApiCredentials,
        AccountPermission::ManageMembers,
        AccountPermission::VerifyKeys,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountPermission::ManageApiCredentials => "manage_api_credentials",
            AccountPermission::ManageMembers => "manage_members",
            AccountPermission::VerifyKeys => "keys:verify",
        }
    }

    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                InvalidValue::new(format!(
                    "unknown account permission {s:?}; expected one of manage_api_credentials, manage_members, keys:verify"
                ))
            })
    }

    /// What a member holds: every permission for owners and admins, the
    /// explicit grants for plain members.
    pub fn effective_for(role: Role, granted: &[AccountPermission]) -> Vec<AccountPermission> {
        match role {
            Role::Owner | Role::Admin => Self::ALL.to_vec(),
            Role::Member => {
                let mut v = granted.to_vec();
                v.sort();
                v.dedup();
                v
            }
        }
    }
}

/// The lifecycle state of an API key as stored. `Expired` is also derived at
/// verification time from `expires_at`, before the sweep job writes it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    Inactive,
    Expired,
    Revoked,
}

impl KeyStatus {
    pub const ALL: [KeyStatus; 4] = [
        KeyStatus::Active,
        KeyStatus::Inactive,
        KeyStatus::Expired,
        KeyStatus::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Inactive => "inactive",
            KeyStatus::Expired => "expired",
            KeyStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| InvalidValue::new("must be one of active, inactive, expired, revoked"))
    }
}

/// What a key is for (seed 001): `secret` keys carry full API access per their
/// permissions, `ingest` keys only send data and may be presented as a
/// Site ID + secret pair, `publishable` keys may be embedded in web pages.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    #[default]
    Secret,
    Ingest,
    Publishable,
}

impl KeyKind {
    pub const ALL: [KeyKind; 3] = [KeyKind::Secret, KeyKind::Ingest, KeyKind::Publishable];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Secret => "secret",
            KeyKind::Ingest => "ingest",
            KeyKind::Publishable => "publishable",
        }
    }

    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| InvalidValue::new("must be one of secret, ingest, publishable"))
    }
}

/// What consumes a workspace's credentials (seeds 000, 002).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntegrationKind {
    /// The platform's JavaScript snippet in web pages: public credentials only.
    JavascriptSnippet,
    /// A server of the customer's calling the platform's API.
    Server,
    /// A Segment connection sending data in.
    Segment,
    Custom,
}

impl IntegrationKind {
    pub const ALL: [IntegrationKind; 4] = [
        IntegrationKind::JavascriptSnippet,
        IntegrationKind::Server,
        IntegrationKind::Segment,
        IntegrationKind::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationKind::JavascriptSnippet => "javascript_snippet",
            IntegrationKind::Server => "server",
            IntegrationKind::Segment => "segment",
            IntegrationKind::Custom => "custom",
        }
    }

    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                InvalidValue::new("must be one of javascript_snippet, server, segment, custom")
            })
    }

    /// Which kinds of key the integration may use: a snippet is public, so
    /// only a publishable key; Segment sends data, so an ingest key.
    pub fn accepts(self, key: KeyKind) -> bool {
        match self {
            IntegrationKind::JavascriptSnippet => key == KeyKind::Publishable,
            IntegrationKind::Segment => key == KeyKind::Ingest,
            IntegrationKind::Server | IntegrationKind::Custom => true,
        }
    }
}

/// A permission name from an account's catalog, such as `customers:read`:
/// `resource:action`, lower-case ASCII letters, digits, `_`, `-` and `.`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PermissionName(String);

impl PermissionName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        Self::check(s).map(|()| Self(s.to_owned()))
    }

    /// `s` as a name, without copying it.
    fn parse_owned(s: String) -> Result<Self, InvalidValue> {
        Self::check(&s).map(|()| Self(s))
    }

    fn check(s: &str) -> Result<(), InvalidValue> {
        let valid_part = |p: &str| {
            !p.is_empty()
                && p.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
                })
        };
        match s.split_once(':') {
            Some((resource, action))
                if s.len() <= Self::MAX_LEN && valid_part(resource) && valid_part(action) =>
            {
                Ok(())
            }
            _ => Err(InvalidValue::new(format!(
                "{s:?} is not a permission name: expected resource:action in lower-case letters, digits, '_', '-' or '.', at most {} characters",
                Self::MAX_LEN
            ))),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Ingest-class permissions only send data in (`events:write`,
    /// `telemetry:track`, `profiles:ingest`): the only ones `ingest` and
    /// `publishable` keys may hold, since those keys travel in client code.
    pub fn is_ingest_class(&self) -> bool {
        self.0
            .split_once(':')
            .is_some_and(|(_, action)| matches!(action, "write" | "track" | "ingest"))
    }
}

impl fmt::Display for PermissionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PermissionName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse_owned(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A per-key rate limit: at most `limit` requests per `window_seconds`, with
/// bursts of up to `limit` (a GCRA with period `window / limit`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicy {
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000_000))]
    pub limit: u32,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86_400))]
    pub window_seconds: u32,
}

impl RateLimitPolicy {
    pub const MAX_WINDOW_SECONDS: u32 = 86_400;
    pub const MAX_LIMIT: u32 = 1_000_000_000;

    /// Checks the bounds; the error names the sub-field at fault.
    pub fn validate(&self) -> Result<(), (&'static str, InvalidValue)> {
        if self.limit == 0 || self.limit > Self::MAX_LIMIT {
            return Err((
                "limit",
                InvalidValue::new(format!("must be between 1 and {}", Self::MAX_LIMIT)),
            ));
        }
        if self.window_seconds == 0 || self.window_seconds > Self::MAX_WINDOW_SECONDS {
            return Err((
                "window_seconds",
                InvalidValue::new(format!(
                    "must be between 1 and {}",
                    Self::MAX_WINDOW_SECONDS
                )),
            ));
        }
        Ok(())
    }
}

/// `LIMIT/WINDOW`, the notation of the CLI and of `Display`: `100/60s`,
/// `1000/1h`; a bare window is in seconds (`100/60`).
impl std::str::FromStr for RateLimitPolicy {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let (limit, window) = s
            .split_once('/')
            .ok_or_else(|| InvalidValue::new("must be LIMIT/WINDOW, such as 100/60s or 1000/1h"))?;
        let limit = limit
            .parse()
            .map_err(|_| InvalidValue::new("LIMIT must be a whole number, such as 100/60s"))?;
        let window_seconds = parse_duration_seconds(window)?;
        let window_seconds =
            u32::try_from(window_seconds).map_err(|_| InvalidValue::new("WINDOW is too long"))?;
        let policy = RateLimitPolicy {
            limit,
            window_seconds,
        };
        policy
            .validate()
            .map_err(|(field, e)| InvalidValue::new(format!("{field} {e}")))?;
        Ok(policy)
    }
}

impl fmt::Display for RateLimitPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.limit,
            DurationSeconds(u64::from(self.window_seconds))
        )
    }
}

/// A duration as people write it: a whole number and a unit, `s`, `m`, `h`
/// or `d` (`90d`, `15m`); without a unit, seconds.
pub fn parse_duration_seconds(s: &str) -> Result<u64, InvalidValue> {
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(unit_at);
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(InvalidValue::new(
                "the unit must be s, m, h or d, such as 90d",
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&seconds| seconds > 0)
        .ok_or_else(|| InvalidValue::new("must be a positive whole number and a unit, such as 90d"))
}

/// Prints a number of seconds in the largest unit that divides it exactly,
/// so that `parse_duration_seconds` reads back the same value.
pub struct DurationSeconds(pub u64);

impl fmt::Display for DurationSeconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0;
        let (n, unit) = [(86_400, "d"), (3600, "h"), (60, "m")]
            .into_iter()
            .find(|&(scale, _)| seconds > 0 && seconds.is_multiple_of(scale))
            .map_or((seconds, "s"), |(scale, unit)| (seconds / scale, unit));
        write!(f, "{n}{unit}")
    }
}

/// A human-facing name (key, workspace, integration, token): trimmed,
/// 1 to 100 characters, no control characters.
pub fn validate_display_name(s: &str) -> Result<(), InvalidValue> {
    if s.trim() != s {
        return Err(InvalidValue::new("must not start or end with whitespace"));
    }
    let chars = s.chars().count();
    if chars == 0 || chars > 100 {
        return Err(InvalidValue::new("must be 1 to 100 characters"));
    }
    if s.chars().any(char::is_control) {
        return Err(InvalidValue::new("must not contain control characters"));
    }
    Ok(())
}

/// An environment's name inside a workspace (`production`, `staging`,
/// `eu-production`): lower-case letters, digits and `-`, 1 to 32 characters.
pub fn validate_environment_name(s: &str) -> Result<(), InvalidValue> {
    let ok = (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()[0].is_ascii_lowercase();
    if ok {
        Ok(())
    } else {
        Err(InvalidValue::new(
            "must be 1 to 32 lower-case letters, digits or '-', starting with a letter",
        ))
    }
}

/// The environments every new workspace starts with (seed 004), with the tag
/// each puts in its keys.
pub const DEFAULT_ENVIRONMENTS: [(&str, &str); 3] = [
    ("production", "live"),
    ("staging", "stg"),
    ("development", "dev"),
];

/// A web origin for a publishable key's list: `scheme://host[:port]`, as
/// browsers send it in `Origin`, lower-cased. No path, query or fragment.
pub fn normalize_origin(s: &str) -> Result<String, InvalidValue> {
    let invalid = || {
        InvalidValue::new("must be an origin such as https://shop.example or http://localhost:3000")
    };
    let (scheme, rest) = s.split_once("://").ok_or_else(invalid)?;
    let host_ok = !rest.is_empty()
        && rest.len() <= 253
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if matches!(scheme, "http" | "https") && host_ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(invalid())
    }
}

/// A customer identifier of the platform a key may be scoped to: 1 to 128
/// printable ASCII characters without spaces.
pub fn validate_customer_id(s: &str) -> Result<(), InvalidValue> {
    if (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(InvalidValue::new(
            "must be 1 to 128 printable ASCII characters without spaces",
        ))
    }
}

/// A plausible email address, lower-cased: one `@`, a dotted domain, no
/// spaces. Real validation is delivery, which invitations do.
pub fn normalize_email(email: &str) -> Result<String, InvalidValue> {
    let plausible = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if plausible {
        Ok(email.to_ascii_lowercase())
    } else {
        Err(InvalidValue::new("must be an email address"))
    }
}

/// Passwords: at least 12 characters (NIST SP 800-63B allows 8; we ask a
/// little more of the people who hold every key), at most 1024.
pub fn validate_password(password: &str) -> Result<(), InvalidValue> {
    match password.chars().count() {
        0..=11 => Err(InvalidValue::new("must be at least 12 characters")),
        1025.. => Err(InvalidValue::new("must be at most 1024 characters")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_notation() {
        let policy = |limit, window_seconds| RateLimitPolicy {
            limit,
            window_seconds,
        };
        assert_eq!("100/60s".parse(), Ok(policy(100, 60)));
        assert_eq!("100/60".parse(), Ok(policy(100, 60)));
        assert_eq!("1000/1h".parse(), Ok(policy(1000, 3600)));
        assert_eq!("5/1d".parse(), Ok(policy(5, 86_400)));
        assert_eq!(policy(100, 60).to_string(), "100/1m");
        assert_eq!(policy(7, 90).to_string(), "7/90s");
        for bad in [
            "",
            "100",
            "/60s",
            "100/",
            "0/60s",
            "100/0s",
            "100/2d",
            "-1/60s",
            "100/60x",
            "100/ 60s",
            "1e3/60s",
            "100/60s/1",
        ] {
            assert!(bad.parse::<RateLimitPolicy>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_seconds("90d"), Ok(90 * 86_400));
        assert_eq!(parse_duration_seconds("15m"), Ok(900));
        assert_eq!(parse_duration_seconds("45"), Ok(45));
        for bad in ["", "0d", "d", "1.5h", "1w", "99999999999999999999d", "1 d"] {
            assert!(parse_duration_seconds(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(DurationSeconds(7200).to_string(), "2h");
        assert_eq!(DurationSeconds(61).to_string(), "61s");
    }

    #[test]
    fn permission_names() {
        // Deserializing takes the same names as `parse`, and keeps them whole.
        let deserialized = |s: &str| {
            let string =
                serde::de::value::StringDeserializer::<serde::de::value::Error>::new(s.to_owned());
            PermissionName::deserialize(string).ok()
        };
        for good in ["customers:read", "licenses.v2:manage-all"] {
            let parsed = PermissionName::parse(good).unwrap();
            assert_eq!(parsed.as_str(), good);
            assert_eq!(deserialized(good), Some(parsed));
        }
        let too_long = format!("a:{}", "b".repeat(63));
        for bad in [
            "customers",
            ":read",
            "customers:",
            "Customers:read",
            "a:b:c",
            "a b:c",
            "",
            &too_long,
        ] {
            assert!(PermissionName::parse(bad).is_err(), "{bad} accepted");
            assert_eq!(deserialized(bad), None, "{bad} deserialized");
        }
    }

    #[test]
    fn members_hold_only_grants_admins_hold_all() {
        let grants = [AccountPermission::VerifyKeys, AccountPermission::VerifyKeys];
        assert_eq!(
            AccountPermission::effective_for(Role::Member, &grants),
            vec![AccountPermission::VerifyKeys]
        );
        assert_eq!(
            AccountPermission::effective_for(Role::Admin, &[]),
            AccountPermission::ALL.to_vec()
        );
    }

    #[test]
    fn rate_limit_bounds_name_the_field() {
        let p = RateLimitPolicy {
            limit: 0,
            window_seconds: 60,
        };
        assert_eq!(p.validate().unwrap_err().0, "limit");
        let p = RateLimitPolicy {
            limit: 5,
            window_seconds: 0,
        };
        assert_eq!(p.validate().unwrap_err().0, "window_seconds");
        assert!(
            RateLimitPolicy {
                limit: 5,
                window_seconds: 60
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn emails_and_passwords() {
        assert_eq!(
            normalize_email("Ada@Example.COM").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
            "a@b@c.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad} accepted");
        }
        assert!(validate_password("short").is_err());
        assert!(validate_password("twelve chars").is_ok());
    }

    #[test]
    fn ingest_class_and_origins() {
        assert!(
            PermissionName::parse("events:write")
                .unwrap()
                .is_ingest_class()
        );
        assert!(
            PermissionName::parse("telemetry:track")
                .unwrap()
                .is_ingest_class()
        );
        assert!(
            !PermissionName::parse("customers:read")
                .unwrap()
                .is_ingest_class()
        );
        assert!(
            !PermissionName::parse("write:read")
                .unwrap()
                .is_ingest_class()
        );
        assert_eq!(
            normalize_origin("https://Shop.Example").unwrap(),
            "https://shop.example"
        );
        assert!(normalize_origin("http://localhost:3000").is_ok());
        for bad in [
            "shop.example",
            "ftp://x",
            "https://",
            "https://a/b",
            "https://a?b",
            "javascript://x",
        ] {
            assert!(normalize_origin(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn names() {
        assert!(validate_display_name("Main Website Integration").is_ok());
        assert!(validate_display_name(" padded").is_err());
        assert!(validate_display_name("").is_err());
        assert!(validate_display_name("a\nb").is_err());
        assert!(validate_environment_name("eu-production").is_ok());
        assert!(validate_environment_name("Prod").is_err());
        assert!(validate_environment_name("1prod").is_err());
    }
}
