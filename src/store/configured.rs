//! The store of the configured database: the one place that picks the SQL
//! dialect from the configuration, for the server and for the command
//! line alike.

use std::sync::Arc;

use super::Store;
use super::postgres::PostgresStore;
use super::sql::{AccountTable, ApiKeyTable};
use super::sqlite::SqliteStore;
use crate::config::{DatabaseBackend, DatabaseConfig};

/// The SQL store of the configured database, seen as the [`Store`] and as
/// the `api_keys` table (one set of pools for both).
pub(crate) struct Opened {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) api_keys: Arc<dyn ApiKeyTable>,
    pub(crate) accounts: Arc<dyn AccountTable>,
    /// How many batches may commit at once: SQLite has one writer; on
    /// PostgreSQL a quarter of the pool, so that reads keep connections of
    /// their own.
    pub(crate) committers: usize,
}

/// Opens the store on `connections` connections (on SQLite: readers, next
/// to its one writer). SQLite's file is opened now; PostgreSQL is connected
/// to lazily.
pub(crate) async fn open(database: &DatabaseConfig, connections: u32) -> anyhow::Result<Opened> {
    Ok(match &database.backend {
        DatabaseBackend::Sqlite(path) => {
            let store =
                Arc::new(SqliteStore::open(path, connections, database.acquire_timeout).await?);
            Opened {
                store: Arc::clone(&store) as Arc<dyn Store>,
                api_keys: Arc::clone(&store) as Arc<dyn ApiKeyTable>,
                accounts: store,
                committers: 1,
            }
        }
        DatabaseBackend::Postgres(options) => {
            let mut store = PostgresStore::connect_lazy(
                options.connect_options(),
                connections,
                database.acquire_timeout,
                database.events_retention,
            );
            if let Some(replica) = &database.read_replica {
                store = store.with_read_replica(
                    replica.options.connect_options(),
                    connections,
                    database.acquire_timeout,
                    replica.max_lag,
                );
            }
            let store = Arc::new(store);
            Opened {
                store: Arc::clone(&store) as Arc<dyn Store>,
                api_keys: Arc::clone(&store) as Arc<dyn ApiKeyTable>,
                accounts: store,
                committers: (connections as usize / 4).max(1),
            }
        }
    })
}
