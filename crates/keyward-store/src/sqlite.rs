//! SQLite: one file (or memory), WAL, foreign keys on, one writer at a time
//! (see [`SqlStore`]'s write gate).

use crate::error::StoreResult;
use crate::sql::{Dialect, SqlStore, connect};
use sqlx::Executor;
use sqlx::any::AnyPoolOptions;
use std::time::Duration;

/// Set on every new connection. `foreign_keys` is per connection and off by
/// default in SQLite; the cascades and tenant checks of the schema depend on
/// it. `busy_timeout` makes a connection wait for another process's write
/// lock instead of failing at once. WAL lets readers run beside the writer.
const CONNECTION_PRAGMAS: &str =
    "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;";

/// Set on the writing connection only (every commit, and so every
/// automatic checkpoint, is its own). Request logs are written a second's
/// rows at a time, and their indexes take each batch to as many places as
/// there are keys in use:
/// - `cache_size`: 64 MB of page cache instead of SQLite's 2 MB, which
///   ~1,000 keys' worth of index pages outgrow;
/// - `wal_autocheckpoint`: a checkpoint every 10,000 WAL pages (~40 MB)
///   instead of every 1,000, so that pages rewritten by commit after commit
///   are copied back to the database once per checkpoint, not once per
///   batch.
///
/// Each took about a sixth off the CPU per request-log row with 1,000 keys
/// (docs/PERFORMANCE.md, fifteenth session). The readers keep the defaults.
const WRITER_PRAGMAS: &str = "PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 10000;";

fn pool_options(pragmas: &'static [&'static str]) -> AnyPoolOptions {
    AnyPoolOptions::new().after_connect(move |conn, _meta| {
        Box::pin(async move {
            for pragma in pragmas {
                conn.execute(*pragma).await?;
            }
            Ok(())
        })
    })
}

pub(crate) async fn open(url: &str) -> StoreResult<SqlStore> {
    let writer = single_lasting_connection(pool_options(&[CONNECTION_PRAGMAS, WRITER_PRAGMAS]));
    let (pool, writes) = if is_in_memory(url) {
        let only = connect(writer, url).await?;
        (only.clone(), only)
    } else {
        let url = with_create_mode(url);
        // The writer first: it creates the file, then migrates it.
        let writes = connect(writer, &url).await?;
        let reads = connect(pool_options(&[CONNECTION_PRAGMAS]), &url).await?;
        (reads, writes)
    };
    sqlx::migrate!("migrations/sqlite").run(&writes).await?;
    Ok(SqlStore::new(pool, writes, Dialect::Sqlite))
}

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// A pool of exactly one connection, kept forever: an in-memory database
/// lives as long as its connection and is seen by no other, and a file's
/// writer keeps its prepared statements (see [`SqlStore`]'s `writes`).
fn single_lasting_connection(options: AnyPoolOptions) -> AnyPoolOptions {
    options
        .min_connections(1)
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(30))
}

/// Adds `mode=rwc` (create the file if missing) unless the URL sets a mode.
fn with_create_mode(url: &str) -> String {
    if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_mode_is_added_once() {
        assert_eq!(with_create_mode("sqlite://k.db"), "sqlite://k.db?mode=rwc");
        assert_eq!(
            with_create_mode("sqlite://k.db?cache=shared"),
            "sqlite://k.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            with_create_mode("sqlite://k.db?mode=ro"),
            "sqlite://k.db?mode=ro"
        );
    }

    #[tokio::test]
    async fn in_memory_database_keeps_its_tables() {
        let store = open("sqlite::memory:").await.unwrap();
        for _ in 0..3 {
            assert_eq!(crate::Store::count_accounts(&store).await.unwrap(), 0);
        }
    }
}
