//! Versioned migrations, embedded in the binary so that a release needs no
//! files beside it. sqlx records applied versions in `_sqlx_migrations` and,
//! on PostgreSQL, holds an advisory lock while migrating, so replicas that
//! start together apply each migration once.

use std::borrow::Cow;

use futures_util::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

/// An ordered list of `(version, description, sql)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

pub(crate) const SQLITE: Embedded = Embedded(&[(
    1,
    "initial",
    include_str!("../../migrations/sqlite/0001_initial.sql"),
)]);

pub(crate) const POSTGRES: Embedded = Embedded(&[(
    1,
    "initial",
    include_str!("../../migrations/postgres/0001_initial.sql"),
)]);

pub(crate) async fn migrator(source: Embedded) -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(source).await
}
