//! Throw-away databases for tests (cargo feature `testing`).
//!
//! ```text
//! let Some(db) = TestDatabase::create_or_skip(Backend::Postgres).await else { return };
//! let store = db.open_store().await;
//! ```
//!
//! SQLite gets a fresh file in a temporary directory; PostgreSQL a fresh
//! schema on the server named by `KEYWARD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Both disappear when the
//! [`TestDatabase`] is dropped.
//!
//! An unreachable PostgreSQL fails the test, so that a missing server never
//! passes for a green run. Only when `KEYWARD_TEST_SKIP_POSTGRES=1` is set,
//! and `CI` is not `true`, does [`TestDatabase::create_or_skip`] print a skip
//! line and return `None` instead.

use crate::Store;
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};
use std::sync::Arc;

pub const POSTGRES_URL_VAR: &str = "KEYWARD_TEST_POSTGRES_URL";
pub const SKIP_POSTGRES_VAR: &str = "KEYWARD_TEST_SKIP_POSTGRES";
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// How long to wait for the test server before calling it unreachable.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of its own for one test; `url` opens it with
/// [`crate::open`].
pub struct TestDatabase {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    /// The file goes when the directory is dropped.
    SqliteFile {
        _dir: tempfile::TempDir,
    },
    PostgresSchema {
        server_url: String,
        schema: String,
    },
}

impl TestDatabase {
    /// A fresh database; panics if it cannot be made (PostgreSQL
    /// unreachable included, whatever the environment says).
    pub async fn create(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Sqlite => create_sqlite(),
            Backend::Postgres => match create_postgres().await {
                Ok(db) => db,
                Err(reason) => panic!("{}", postgres_unavailable_message(&reason)),
            },
        }
    }

    /// Like [`create`](Self::create), except that an unreachable PostgreSQL
    /// gives `None` (after a loud skip line on stderr) when skipping is
    /// allowed: `KEYWARD_TEST_SKIP_POSTGRES=1` and `CI` not `true`.
    pub async fn create_or_skip(backend: Backend) -> Option<TestDatabase> {
        match backend {
            Backend::Sqlite => Some(create_sqlite()),
            Backend::Postgres => match create_postgres().await {
                Ok(db) => Some(db),
                Err(reason) if postgres_skip_allowed() => {
                    announce_skip(&reason);
                    None
                }
                Err(reason) => panic!("{}", postgres_unavailable_message(&reason)),
            },
        }
    }

    /// Opens the store on this database (running the migrations).
    pub async fn open_store(&self) -> Arc<dyn Store> {
        match crate::open(&self.url).await {
            Ok(store) => store,
            Err(e) => panic!("cannot open the test store: {e}"),
        }
    }
}

fn create_sqlite() -> TestDatabase {
    let dir = match tempfile::Builder::new().prefix("keyward-test-").tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("cannot create a temporary directory for SQLite: {e}"),
    };
    TestDatabase {
        url: format!("sqlite://{}", dir.path().join("keyward.db").display()),
        cleanup: Cleanup::SqliteFile { _dir: dir },
    }
}

/// Creates a schema of its own on the test server, or says why it could not.
async fn create_postgres() -> Result<TestDatabase, String> {
    let server_url =
        std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    // An id is a fresh, lower-case ULID: a valid identifier that needs no
    // quoting and cannot collide with another test's.
    let schema = crate::ids::new_id("kwtest");
    let unreachable =
        |e: &dyn std::fmt::Display| format!("cannot connect to {}: {e}", redacted(&server_url));
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(&server_url))
        .await
        .map_err(|e| unreachable(&e))?
        .map_err(|e| unreachable(&e))?;
    conn.execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .map_err(|e| format!("cannot create schema {schema}: {e}"))?;
    let _ = conn.close().await;
    Ok(TestDatabase {
        url: with_search_path(&server_url, &schema),
        cleanup: Cleanup::PostgresSchema { server_url, schema },
    })
}

/// The server URL with the connection's `search_path` set to `schema`
/// (PostgreSQL's `options` startup parameter, URL-encoded).
fn with_search_path(server_url: &str, schema: &str) -> String {
    let separator = if server_url.contains('?') { '&' } else { '?' };
    format!("{server_url}{separator}options=-c%20search_path%3D{schema}")
}

fn postgres_skip_allowed() -> bool {
    let skip_requested = std::env::var(SKIP_POSTGRES_VAR).is_ok_and(|v| v == "1");
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    skip_requested && !in_ci
}

/// Written to the process's stderr directly: the test harness captures
/// `eprintln!` of passing tests, and a skip must not go unseen.
fn announce_skip(reason: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!! SKIPPED: PostgreSQL test, server unreachable ({reason}); \
         unset {SKIP_POSTGRES_VAR} to make this a failure !!!!!!!!\n"
    );
}

fn postgres_unavailable_message(reason: &str) -> String {
    format!(
        "PostgreSQL is needed for this test and is unreachable: {reason}.\n\
         Start a server (trust auth, database `test`) or point {POSTGRES_URL_VAR} at one. \
         Outside CI, {SKIP_POSTGRES_VAR}=1 skips PostgreSQL tests instead."
    )
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_owned(),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Cleanup::PostgresSchema { server_url, schema } = &self.cleanup {
            drop_schema(server_url.clone(), schema.clone());
        }
    }
}

/// Drops the schema, best effort. `Drop` cannot await, and may run inside a
/// test's runtime, where blocking on another runtime is refused: so a thread
/// of its own runs a small runtime, and this waits for it.
fn drop_schema(server_url: String, schema: String) {
    let worker = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            let Ok(mut conn) = PgConnection::connect(&server_url).await else {
                return;
            };
            // A test that panicked mid-transaction may leave a connection
            // holding locks until its runtime goes away, after this returns:
            // give up rather than wait for it.
            let _ = conn.execute("SET lock_timeout = '5s'").await;
            let _ = conn
                .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
                .await;
            let _ = conn.close().await;
        });
    });
    let _ = worker.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_path_is_added_to_the_url() {
        assert_eq!(
            with_search_path("postgres://p@h/db", "kwtest_x"),
            "postgres://p@h/db?options=-c%20search_path%3Dkwtest_x"
        );
        assert_eq!(
            with_search_path("postgres://p@h/db?sslmode=disable", "s"),
            "postgres://p@h/db?sslmode=disable&options=-c%20search_path%3Ds"
        );
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redacted("postgres://u:secret@h:5432/db"),
            "postgres://u@h:5432/db"
        );
        assert_eq!(redacted("postgres://h/db"), "postgres://h/db");
    }
}
