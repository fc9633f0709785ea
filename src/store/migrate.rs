//! Versioned migrations, embedded in the binary so that a release needs no
//! files beside it. `build.rs` finds them in `migrations/<backend>/`, so a
//! new `NNNN_description.sql` file is applied without editing a list.
//! sqlx records applied versions in `_sqlx_migrations` and, on PostgreSQL,
//! holds an advisory lock while migrating, so replicas that start together
//! apply each migration once.

use std::borrow::Cow;

use futures_util::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

mod found {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

/// One backend's migrations, as `(version, description, sql)` in version order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Embedded(&'static [(i64, &'static str, &'static str)]);

pub(crate) const SQLITE: Embedded = Embedded(found::SQLITE);
pub(crate) const POSTGRES: Embedded = Embedded(found::POSTGRES);

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

pub(crate) async fn migrator(source: Embedded) -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(source).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_migration_file_is_found_in_version_order() {
        for (source, dir) in [(SQLITE, "sqlite"), (POSTGRES, "postgres")] {
            let files =
                std::fs::read_dir(format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR")))
                    .unwrap()
                    .filter(|e| {
                        e.as_ref()
                            .unwrap()
                            .path()
                            .extension()
                            .is_some_and(|x| x == "sql")
                    })
                    .count();
            let versions: Vec<i64> = migrator(source)
                .await
                .unwrap()
                .iter()
                .map(|m| m.version)
                .collect();
            assert_eq!(versions.len(), files, "{dir}");
            assert!(versions.windows(2).all(|pair| pair[0] < pair[1]), "{dir}");
        }
    }
}
