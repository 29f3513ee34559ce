//! PostgreSQL: a pool and the migrations. Tables go to the connection's
//! `search_path` (tests select a schema of their own through the URL).

use crate::error::StoreResult;
use crate::sql::{Dialect, SqlStore, connect};
use sqlx::any::AnyPoolOptions;

pub(crate) async fn open(url: &str) -> StoreResult<SqlStore> {
    let pool = connect(AnyPoolOptions::new(), url).await?;
    sqlx::migrate!("migrations/postgres").run(&pool).await?;
    Ok(SqlStore::new(pool, Dialect::Postgres))
}
