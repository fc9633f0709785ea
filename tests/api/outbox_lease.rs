//! Outbox rows leased by a relay that was killed (`kill -9`) are published
//! again within the relay's short lease, not minutes later.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::{Stack, TestApp, TestData, spawn_app_with, test_config};

crate::stack_tests!(rows_leased_by_a_killed_relay_are_counted_within_ten_seconds_of_a_restart);

/// How long the relay's claims lease rows without a renewal (the relay's
/// `LEASE`; its unit tests check that a killed relay leaves no longer).
const LEASE: Duration = Duration::from_secs(5);

/// How soon after a restart the activity must be exact again: the lease,
/// plus a few seconds of start-up, polling and processing.
const BOUND: Duration = Duration::from_secs(10);

/// Leases every outbox row as a relay killed while publishing leaves
/// them: for the relay's whole lease, to a claim no process holds any more.
async fn lease_every_row_to_a_dead_relay(app: &TestApp) -> u64 {
    let holder = uuid::Uuid::new_v4();
    match app.data.database() {
        None => {
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(app.sqlite_path());
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            let until = (chrono::Utc::now() + LEASE)
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
            let leased = sqlx::query(
                "UPDATE outbox SET locked_until = ?, locked_by = ?, attempts = attempts + 1",
            )
            .bind(until)
            .bind(holder)
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected();
            pool.close().await;
            leased
        }
        Some(options) => {
            let pool = sqlx::PgPool::connect_with(options).await.unwrap();
            let leased = sqlx::query(
                "UPDATE outbox SET locked_until = now() + make_interval(secs => $1), \
                 locked_by = $2, attempts = attempts + 1",
            )
            .bind(LEASE.as_secs_f64())
            .bind(holder)
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected();
            pool.close().await;
            leased
        }
    }
}

async fn rows_leased_by_a_killed_relay_are_counted_within_ten_seconds_of_a_restart(stack: Stack) {
    let data = TestData::new(stack).await;
    let mut config = test_config(&data);
    // Writes only: every message stays in the outbox.
    config.bus.outbox_relay_enabled = false;
    // The stopped app's consumer leaves the group as it closes, off the
    // async threads; until it has, its partitions wait for its session to
    // end. The broker's shortest session keeps that wait inside the bound
    // even when the close is slow (a loaded machine), as the lease is.
    if let Some(kafka) = config.bus.kafka.as_mut() {
        kafka.session_timeout = Duration::from_secs(6);
    }
    let app = spawn_app_with(config, Arc::clone(&data)).await;
    let user = app.create_user().await;
    let id = user["id"].as_str().unwrap().to_owned();
    for _ in 0..4 {
        app.create_event(&id, "click").await;
    }
    assert_eq!(lease_every_row_to_a_dead_relay(&app).await, 5);
    let leased_at = Instant::now();

    let app = app.restart(|c| c.bus.outbox_relay_enabled = true).await;
    let activity = app.wait_for_activity(&id, |a| a["total_events"] == 5).await;
    let late = leased_at.elapsed();
    assert!(
        late <= BOUND,
        "activity exact {late:?} after the crash, more than {BOUND:?}"
    );
    assert_eq!(activity["events_by_type"]["click"], 4);
    app.stop().await.unwrap();
}
