//! Request logs (one row per verification outcome) and the change feed the
//! server's verification caches listen to.

/// One verification outcome, as buffered by the server and written in
/// batches. The store assigns the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequestLog {
    pub account_id: String,
    pub at: i64,
    /// `None` when no key of the account had the presented hash.
    pub key_id: Option<String>,
    pub workspace_id: Option<String>,
    /// The key's environment when it was found, else the one asked for.
    pub environment: Option<String>,
    pub client_ip: Option<String>,
    pub permissions: Vec<String>,
    /// The verification code (`valid`, `unknown_key`, …).
    pub code: String,
    pub latency_us: i64,
    /// In gateway mode, the request's method and path (without its query,
    /// which may carry secrets); `None` for `POST /v1/verify`.
    pub method: Option<String>,
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLog {
    /// `log_<ulid>`: ids sort by the time they were written.
    pub id: String,
    pub entry: NewRequestLog,
}

/// Which logs to list; every field narrows. Times are Unix milliseconds,
/// `from` inclusive and `to` exclusive.
#[derive(Debug, Clone, Default)]
pub struct RequestLogFilter {
    pub key_id: Option<String>,
    pub workspace_id: Option<String>,
    pub code: Option<String>,
    pub environment: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// What the store tells the caches of this node about changes another node
/// (or anything else) committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Something an account's keys or tokens depend on changed, committed
    /// at about `committed_at` (Unix ms) by the database's clock.
    Account {
        account_id: String,
        committed_at: Option<i64>,
    },
    /// Notifications may have been lost (the listening connection dropped
    /// and is back): everything cached must be dropped.
    Resync,
}
