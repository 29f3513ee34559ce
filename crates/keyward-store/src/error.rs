use std::fmt;

pub type StoreResult<T> = Result<T, StoreError>;

/// What a store operation can fail with. The variants that concern input
/// name the request field at fault so the API can say which one it was.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist in this account (or exists in another).
    #[error("{what} not found")]
    NotFound {
        what: &'static str,
        field: Option<&'static str>,
    },
    /// A uniqueness rule or a state rule refuses the change.
    #[error("{message}")]
    Conflict {
        field: &'static str,
        message: String,
    },
    /// The value is well-formed but not acceptable here (e.g. a permission
    /// missing from the catalog).
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The object is still referenced and cannot be removed.
    #[error("{message}")]
    InUse { message: String },
    /// A lifecycle rule refuses the change (`last_ingest_key`,
    /// `key_in_use`); `code` is stable for clients to branch on.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    /// An input error of one item of a batch: `source` names the field
    /// within `list[index]`.
    #[error("{list}[{index}]: {source}")]
    InItem {
        list: &'static str,
        index: usize,
        source: Box<StoreError>,
    },
    /// Configuration error (bad URL, unsupported backend).
    #[error("{0}")]
    Config(String),
    /// The database could not be reached or failed; nothing was changed.
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Stored data that does not decode: a bug or manual tampering.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn not_found(what: &'static str) -> Self {
        StoreError::NotFound { what, field: None }
    }

    pub fn corrupt(what: impl fmt::Display) -> Self {
        StoreError::Corrupt(what.to_string())
    }

    /// The store did not answer within the caller's time budget: as
    /// unavailable as a refused connection.
    pub fn timed_out() -> Self {
        StoreError::Unavailable(sqlx::Error::PoolTimedOut)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Config(format!("migration failed: {e}"))
    }
}
