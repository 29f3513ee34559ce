//! The verification decision (SPEC §3): given what is known about a key and
//! what the request demands, which outcome applies. The checks run in a fixed
//! order so that the answer — and the HTTP status the platform returns — is
//! stable and never depends on which store or node computed it.
//!
//! Parsing and lookup happen before [`decide`] (they produce
//! [`Code::MalformedKey`] and [`Code::UnknownKey`]); the rate limit happens
//! after it, because only requests that passed every other check may count
//! against a key's limit. A metered key's credits are drawn last, from
//! requests the limit let through; a spent balance is [`Code::RateLimited`]
//! too (SPEC §3's "rate limit / quota" step), told apart by the verdict's
//! credits.

use crate::ip;
use crate::model::{KeyStatus, PermissionName};
use base64::Engine as _;
use ipnet::IpNet;
use serde::Serialize;
use std::fmt;
use std::net::IpAddr;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The stable, machine-readable outcome of a verification.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    Valid,
    MalformedKey,
    UnknownKey,
    KeyInactive,
    KeyRevoked,
    KeyExpired,
    WrongEnvironment,
    IpNotAllowed,
    OriginNotAllowed,
    InsufficientPermissions,
    CustomerMismatch,
    RateLimited,
}

impl Code {
    pub const ALL: [Code; 12] = [
        Code::Valid,
        Code::MalformedKey,
        Code::UnknownKey,
        Code::KeyInactive,
        Code::KeyRevoked,
        Code::KeyExpired,
        Code::WrongEnvironment,
        Code::IpNotAllowed,
        Code::OriginNotAllowed,
        Code::InsufficientPermissions,
        Code::CustomerMismatch,
        Code::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::Valid => "valid",
            Code::MalformedKey => "malformed_key",
            Code::UnknownKey => "unknown_key",
            Code::KeyInactive => "key_inactive",
            Code::KeyRevoked => "key_revoked",
            Code::KeyExpired => "key_expired",
            Code::WrongEnvironment => "wrong_environment",
            Code::IpNotAllowed => "ip_not_allowed",
            Code::OriginNotAllowed => "origin_not_allowed",
            Code::InsufficientPermissions => "insufficient_permissions",
            Code::CustomerMismatch => "customer_mismatch",
            Code::RateLimited => "rate_limited",
        }
    }

    /// The HTTP status the platform should answer its own client with.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Valid => 200,
            Code::MalformedKey
            | Code::UnknownKey
            | Code::KeyInactive
            | Code::KeyRevoked
            | Code::KeyExpired
            | Code::WrongEnvironment => 401,
            Code::IpNotAllowed
            | Code::OriginNotAllowed
            | Code::InsufficientPermissions
            | Code::CustomerMismatch => 403,
            Code::RateLimited => 429,
        }
    }

    pub fn is_valid(self) -> bool {
        self == Code::Valid
    }

    /// One sentence for the client that got this answer (the gateway's
    /// problem `detail`): what is wrong, never which secret or record.
    pub fn description(self) -> &'static str {
        match self {
            Code::Valid => "the key is valid",
            Code::MalformedKey => "the API key is not in a valid format",
            Code::UnknownKey => "the API key is not known",
            Code::KeyInactive => "the API key is disabled",
            Code::KeyRevoked => "the API key has been revoked",
            Code::KeyExpired => "the API key has expired",
            Code::WrongEnvironment => "the API key belongs to another environment",
            Code::IpNotAllowed => "requests from this address are not allowed for this key",
            Code::OriginNotAllowed => "requests from this origin are not allowed for this key",
            Code::InsufficientPermissions => "the API key lacks a permission this request needs",
            Code::CustomerMismatch => "the API key belongs to another customer",
            Code::RateLimited => "too many requests for this key; retry after the time given",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A credential as a client presented it: a bare key (bearer or
/// `X-API-Key`), or a Site ID + secret pair from HTTP Basic. Never printed.
///
/// A bare key borrows the caller's buffer (the request it came in): copying
/// it into a buffer of our own to zeroize later would cost an allocation
/// per verification and protect nothing, since the original stays where it
/// was. A secret decoded from HTTP Basic is ours, and zeroized on drop.
pub struct PresentedCredential<'a> {
    secret: PresentedSecret<'a>,
    claimed_id: Option<String>,
}

enum PresentedSecret<'a> {
    Borrowed(&'a str),
    Decoded(Zeroizing<String>),
}

impl<'a> PresentedCredential<'a> {
    /// The longest `Authorization` value worth decoding; keys are far shorter.
    const MAX_HEADER_LEN: usize = 1024;

    pub fn bare(key: &'a str) -> Self {
        Self {
            secret: PresentedSecret::Borrowed(key.trim()),
            claimed_id: None,
        }
    }

    /// Reads an `Authorization` header value: `Bearer <key>` or
    /// `Basic base64(<site id>:<key>)`. `None` when the value is neither, which
    /// the caller reports as [`Code::MalformedKey`].
    pub fn from_authorization(value: &'a str) -> Option<Self> {
        if value.len() > Self::MAX_HEADER_LEN {
            return None;
        }
        let (scheme, rest) = value.trim().split_once(' ')?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(Self::bare(rest));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?,
        );
        let decoded = std::str::from_utf8(&decoded).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        Some(Self {
            secret: PresentedSecret::Decoded(Zeroizing::new(secret.to_owned())),
            claimed_id: (!id.is_empty()).then(|| id.to_owned()),
        })
    }

    /// The secret, for parsing and hashing only.
    pub fn expose_secret(&self) -> &str {
        match &self.secret {
            PresentedSecret::Borrowed(secret) => secret,
            PresentedSecret::Decoded(secret) => secret,
        }
    }

    /// The Site ID the client paired with the secret, if it used HTTP Basic.
    pub fn claimed_id(&self) -> Option<&str> {
        self.claimed_id.as_deref()
    }
}

impl fmt::Debug for PresentedCredential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedCredential")
            .field("secret", &"[redacted]")
            .field("claimed_id", &self.claimed_id)
            .finish()
    }
}

/// What verification needs to know about a stored key.
#[derive(Debug, Clone, Copy)]
pub struct KeyFacts<'a> {
    pub id: &'a str,
    pub status: KeyStatus,
    pub expires_at_ms: Option<i64>,
    /// When the presented secret is one a rotation replaced: the end of its
    /// grace period, after which it answers `key_expired`.
    pub secret_expires_at_ms: Option<i64>,
    pub environment: &'a str,
    pub workspace_allowlist: &'a [IpNet],
    pub key_allowlist: &'a [IpNet],
    /// For publishable keys: the web origins allowed to present them.
    pub allowed_origins: &'a [String],
    /// Sorted, so membership is a binary search.
    pub permissions: &'a [PermissionName],
    pub customer_id: Option<&'a str>,
}

/// What the request being verified asks of the key.
#[derive(Debug, Clone, Copy)]
pub struct Demand<'a> {
    /// The Site ID from HTTP Basic, which must name the key the secret belongs to.
    pub claimed_id: Option<&'a str>,
    /// The environment the platform's endpoint serves; `None` accepts any.
    pub environment: Option<&'a str>,
    /// Every permission the request needs; all must be held.
    pub permissions: &'a [PermissionName],
    pub ip: Option<IpAddr>,
    /// The customer the request acts for; a key scoped to another customer is refused.
    pub customer_id: Option<&'a str>,
    /// The request's `Origin`, checked against a publishable key's list.
    pub origin: Option<&'a str>,
    pub now_ms: i64,
}

/// Runs every check after lookup and before the rate limit, in SPEC order.
/// [`Code::Valid`] means the request may proceed to the rate limit.
pub fn decide(key: &KeyFacts<'_>, demand: &Demand<'_>) -> Code {
    if let Some(claimed) = demand.claimed_id {
        // A Site ID that does not match must look exactly like an unknown
        // secret, or the pair would confirm which half was right.
        if !bool::from(claimed.as_bytes().ct_eq(key.id.as_bytes())) {
            return Code::UnknownKey;
        }
    }
    let checks: [fn(&KeyFacts<'_>, &Demand<'_>) -> Code; 7] = [
        check_status,
        check_environment,
        check_ip,
        check_origin,
        check_permissions,
        check_customer,
        |_, _| Code::Valid,
    ];
    checks
        .iter()
        .map(|check| check(key, demand))
        .find(|code| *code != Code::Valid)
        .unwrap_or(Code::Valid)
}

fn check_status(key: &KeyFacts<'_>, demand: &Demand<'_>) -> Code {
    match key.status {
        KeyStatus::Revoked => Code::KeyRevoked,
        KeyStatus::Inactive => Code::KeyInactive,
        KeyStatus::Expired => Code::KeyExpired,
        KeyStatus::Active
            if [key.expires_at_ms, key.secret_expires_at_ms]
                .into_iter()
                .flatten()
                .any(|at| demand.now_ms >= at) =>
        {
            Code::KeyExpired
        }
        KeyStatus::Active => Code::Valid,
    }
}

fn check_environment(key: &KeyFacts<'_>, demand: &Demand<'_>) -> Code {
    match demand.environment {
        Some(env) if env != key.environment => Code::WrongEnvironment,
        _ => Code::Valid,
    }
}

fn check_ip(key: &KeyFacts<'_>, demand: &Demand<'_>) -> Code {
    if ip::allows(key.workspace_allowlist, demand.ip) && ip::allows(key.key_allowlist, demand.ip) {
        Code::Valid
    } else {
        Code::IpNotAllowed
    }
}

/// A publishable key lives in web pages, so anyone can copy it; its origin
/// list is what stops another site from using it. Server-side callers send
/// no origin and are not restricted by it.
fn check_origin(key: &KeyFacts<'_>, demand: &Demand<'_>) -> Code {
    match demand.origin {
        Some(origin) if !key.allowed_origins.is_empty() => {
            if key
                .allowed_origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin))
            {
                Code::Valid
            } else {
                Code::OriginNotAllowed
            }
        }
        _ => Code::Valid,
    }
}

fn check_permissions(key: &KeyFacts<'_>, demand: &Demand<'_>) -> Code {
    let holds_all = demand
        .permissions
        .iter()
        .all(|needed| key.permissions.binary_search(needed).is_ok());
    if holds_all {
        Code::Valid
    } else {
        Code::InsufficientPermissions
    }
}

fn check_customer(key: &KeyFacts<'_>, demand: &Demand<'_>) -> Code {
    match (key.customer_id, demand.customer_id) {
        (Some(scoped), Some(asked)) if scoped != asked => Code::CustomerMismatch,
        _ => Code::Valid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(names: &[&str]) -> Vec<PermissionName> {
        let mut v: Vec<_> = names
            .iter()
            .map(|n| PermissionName::parse(n).unwrap())
            .collect();
        v.sort();
        v
    }

    struct Fixture {
        perms: Vec<PermissionName>,
        ws_ips: Vec<IpNet>,
        key_ips: Vec<IpNet>,
        origins: Vec<String>,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                perms: perms(&["customers:read", "telemetry:write"]),
                ws_ips: vec![],
                key_ips: vec![],
                origins: vec![],
            }
        }

        fn key(&self) -> KeyFacts<'_> {
            KeyFacts {
                id: "key_1",
                status: KeyStatus::Active,
                expires_at_ms: Some(2_000),
                secret_expires_at_ms: None,
                environment: "production",
                workspace_allowlist: &self.ws_ips,
                key_allowlist: &self.key_ips,
                allowed_origins: &self.origins,
                permissions: &self.perms,
                customer_id: Some("cus_1"),
            }
        }
    }

    fn demand(needed: &[PermissionName]) -> Demand<'_> {
        Demand {
            claimed_id: None,
            environment: Some("production"),
            permissions: needed,
            ip: Some("203.0.113.7".parse().unwrap()),
            customer_id: Some("cus_1"),
            origin: None,
            now_ms: 1_000,
        }
    }

    #[test]
    fn every_status_code_is_401_403_or_429() {
        for code in Code::ALL {
            let expected = match code {
                Code::Valid => 200,
                Code::IpNotAllowed
                | Code::OriginNotAllowed
                | Code::InsufficientPermissions
                | Code::CustomerMismatch => 403,
                Code::RateLimited => 429,
                _ => 401,
            };
            assert_eq!(code.http_status(), expected, "{code}");
        }
    }

    #[test]
    fn a_matching_request_is_valid() {
        let f = Fixture::new();
        let needed = perms(&["customers:read"]);
        assert_eq!(decide(&f.key(), &demand(&needed)), Code::Valid);
    }

    #[test]
    fn each_check_fails_with_its_code() {
        let f = Fixture::new();
        let needed = perms(&["customers:read"]);
        let base = demand(&needed);

        let mut key = f.key();
        key.status = KeyStatus::Inactive;
        assert_eq!(decide(&key, &base), Code::KeyInactive);
        key.status = KeyStatus::Revoked;
        assert_eq!(decide(&key, &base), Code::KeyRevoked);
        key.status = KeyStatus::Expired;
        assert_eq!(decide(&key, &base), Code::KeyExpired);

        let late = Demand {
            now_ms: 2_000,
            ..base
        };
        assert_eq!(
            decide(&f.key(), &late),
            Code::KeyExpired,
            "expiry is inclusive"
        );

        let mut replaced = f.key();
        replaced.secret_expires_at_ms = Some(1_500);
        assert_eq!(
            decide(&replaced, &base),
            Code::Valid,
            "a replaced secret works in its grace"
        );
        let after_grace = Demand {
            now_ms: 1_500,
            ..base
        };
        assert_eq!(decide(&replaced, &after_grace), Code::KeyExpired);

        let staging = Demand {
            environment: Some("staging"),
            ..base
        };
        assert_eq!(decide(&f.key(), &staging), Code::WrongEnvironment);

        let admin = perms(&["customers:read", "licenses:manage"]);
        assert_eq!(
            decide(&f.key(), &demand(&admin)),
            Code::InsufficientPermissions
        );

        let other = Demand {
            customer_id: Some("cus_2"),
            ..base
        };
        assert_eq!(decide(&f.key(), &other), Code::CustomerMismatch);

        let wrong_site = Demand {
            claimed_id: Some("key_2"),
            ..base
        };
        assert_eq!(decide(&f.key(), &wrong_site), Code::UnknownKey);
        let right_site = Demand {
            claimed_id: Some("key_1"),
            ..base
        };
        assert_eq!(decide(&f.key(), &right_site), Code::Valid);
    }

    #[test]
    fn workspace_and_key_allowlists_both_apply() {
        let mut f = Fixture::new();
        let needed = perms(&[]);
        f.ws_ips = vec![ip::parse_rule("203.0.113.0/24").unwrap()];
        assert_eq!(decide(&f.key(), &demand(&needed)), Code::Valid);
        f.key_ips = vec![ip::parse_rule("198.51.100.0/24").unwrap()];
        assert_eq!(decide(&f.key(), &demand(&needed)), Code::IpNotAllowed);
        f.ws_ips.clear();
        let no_ip = Demand {
            ip: None,
            ..demand(&needed)
        };
        assert_eq!(decide(&f.key(), &no_ip), Code::IpNotAllowed);
    }

    #[test]
    fn publishable_keys_answer_only_their_origins() {
        let mut f = Fixture::new();
        let needed = perms(&[]);
        let from = |origin| Demand {
            origin: Some(origin),
            ..demand(&needed)
        };
        assert_eq!(
            decide(&f.key(), &from("https://evil.example")),
            Code::Valid,
            "no list: any origin"
        );
        f.origins = vec!["https://shop.example".into()];
        assert_eq!(decide(&f.key(), &from("https://shop.example")), Code::Valid);
        assert_eq!(decide(&f.key(), &from("https://SHOP.example")), Code::Valid);
        assert_eq!(
            decide(&f.key(), &from("https://evil.example")),
            Code::OriginNotAllowed
        );
        assert_eq!(
            decide(&f.key(), &demand(&needed)),
            Code::Valid,
            "server-side calls carry no origin"
        );
    }

    #[test]
    fn the_first_failing_check_wins() {
        let mut f = Fixture::new();
        f.ws_ips = vec![ip::parse_rule("10.0.0.0/8").unwrap()];
        let needed = perms(&["licenses:manage"]);
        let mut key = f.key();
        key.status = KeyStatus::Inactive;
        let everything_wrong = Demand {
            environment: Some("staging"),
            customer_id: Some("cus_9"),
            ..demand(&needed)
        };
        assert_eq!(decide(&key, &everything_wrong), Code::KeyInactive);
        assert_eq!(decide(&f.key(), &everything_wrong), Code::WrongEnvironment);
        let right_env = Demand {
            environment: None,
            ..everything_wrong
        };
        assert_eq!(decide(&f.key(), &right_env), Code::IpNotAllowed);
    }

    #[test]
    fn unscoped_keys_serve_any_customer_and_unnamed_customers_pass() {
        let f = Fixture::new();
        let needed = perms(&[]);
        let mut key = f.key();
        key.customer_id = None;
        assert_eq!(decide(&key, &demand(&needed)), Code::Valid);
        let anonymous = Demand {
            customer_id: None,
            ..demand(&needed)
        };
        assert_eq!(decide(&f.key(), &anonymous), Code::Valid);
    }

    #[test]
    fn credentials_from_headers() {
        let bearer = PresentedCredential::from_authorization("Bearer kw_live_abc").unwrap();
        assert_eq!(bearer.expose_secret(), "kw_live_abc");
        assert_eq!(bearer.claimed_id(), None);
        let basic_value = base64::engine::general_purpose::STANDARD.encode("key_1:kw_live_abc");
        let header = format!("Basic {basic_value}");
        let basic = PresentedCredential::from_authorization(&header).unwrap();
        assert_eq!(basic.expose_secret(), "kw_live_abc");
        assert_eq!(basic.claimed_id(), Some("key_1"));
        assert!(PresentedCredential::from_authorization("Digest abc").is_none());
        assert!(PresentedCredential::from_authorization("Basic !!!").is_none());
        assert!(!format!("{basic:?}").contains("abc"));
        assert!(!format!("{bearer:?}").contains("abc"));
        assert_eq!(
            PresentedCredential::bare(" kw_live_abc\n").expose_secret(),
            "kw_live_abc"
        );
    }
}
