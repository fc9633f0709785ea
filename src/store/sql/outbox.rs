//! The relay's side of the outbox: claiming rows under a lease, renewing
//! it, deleting published rows and releasing unpublished ones. Every change
//! runs on the writer; a holder changes only the rows that still carry its
//! id. Writes insert their rows with their effects (see [`super::write`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::database::HasStatementCache;
use sqlx::migrate::Migrate;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::SqlStore;
use super::dialect::Dialect;
use super::statements::{cached, placeholders, placeholders_from};
use crate::store::{OutboxBacklog, OutboxRow, StoreResult};

with_driver_bounds! {
[impl<D: Dialect> SqlStore<D>] {
    /// Runs `statement` (a `DELETE` or an `UPDATE … SET …`) on the outbox
    /// rows `ids`.
    async fn change_outbox_rows(
        &self,
        statement: &str,
        ids: &[i64],
        context: &'static str,
    ) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!("{statement} WHERE id IN {}", placeholders::<D>(ids.len()));
        let query = sqlx::query(&sql).persistent(cached(ids.len()));
        let query = ids.iter().fold(query, |query, id| query.bind(*id));
        query
            .execute(&mut *Self::acquire(&self.writer).await?)
            .await
            .map_err(|e| D::classify(e, context))?;
        Ok(())
    }

    pub(super) async fn claim_outbox_rows(
        &self,
        holder: Uuid,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<OutboxRow>> {
        let mut rows = self
            .writer
            .waiting
            .on(D::claim_outbox(&self.writer.pool, holder, limit, lease))
            .await
            .map_err(|e| D::classify(e, "failed to claim outbox rows"))?;
        // RETURNING gives no order guarantee; publishing follows the outbox.
        rows.sort_unstable_by_key(|r| r.id);
        Ok(rows)
    }

    pub(super) async fn delete_outbox_rows(&self, ids: &[i64]) -> StoreResult<()> {
        self.change_outbox_rows("DELETE FROM outbox", ids, "failed to delete published outbox rows")
            .await
    }

    pub(super) async fn renew_outbox_lease(
        &self,
        holder: Uuid,
        ids: &[i64],
        lease: Duration,
    ) -> StoreResult<Vec<i64>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.writer
            .waiting
            .on(D::renew_outbox(&self.writer.pool, holder, ids, lease))
            .await
            .map_err(|e| D::classify(e, "failed to renew the outbox lease"))
    }

    pub(super) async fn release_outbox_rows(&self, holder: Uuid, ids: &[i64]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE outbox SET locked_until = NULL, locked_by = NULL \
             WHERE locked_by = $1 AND id IN {}",
            placeholders_from::<D>(2, ids.len())
        );
        let query = ids
            .iter()
            .fold(sqlx::query(&sql).persistent(cached(ids.len())).bind(holder), |query, id| {
                query.bind(*id)
            });
        query
            .execute(&mut *Self::acquire(&self.writer).await?)
            .await
            .map_err(|e| D::classify(e, "failed to release outbox rows"))?;
        Ok(())
    }

    pub(super) async fn measure_outbox(&self) -> StoreResult<OutboxBacklog> {
        let (rows, oldest): (i64, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT COUNT(*), MIN(created_at) FROM outbox")
                .fetch_one(&mut *Self::acquire(self.reader()).await?)
                .await
                .map_err(|e| D::classify(e, "failed to measure the outbox"))?;
        Ok(OutboxBacklog {
            rows: rows.try_into().unwrap_or_default(),
            oldest,
        })
    }
}
}
