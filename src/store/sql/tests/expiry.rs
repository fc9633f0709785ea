//! Removing expired events (`store::expire_events`: whole partitions, then
//! rows in batches).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Backend, Place, add_user, event_at};
use crate::domain::{EventFilter, EventType, Page};
use crate::store::postgres::PostgresStore;
use crate::store::{Store, expire_events};

/// Events created before the cut leave, with what they counted in each
/// total; those after stay, and new ones are still taken. On PostgreSQL
/// the partitions wholly before the cut are dropped (the history among
/// them) and the one across it loses its older rows.
pub(super) async fn expired_events_leave_with_their_totals<D: Backend>() {
    let db = D::fresh().await;
    let mut store = db.store();
    if let Place::Postgres { options, .. } = &db.place {
        // With a retention, as the service opens it: events partitioned.
        let keeping = PostgresStore::connect_lazy(
            (**options).clone(),
            2,
            std::time::Duration::from_secs(5),
            Some(std::time::Duration::from_secs(86_400)),
        );
        keeping.migrate().await.unwrap();
        store = std::sync::Arc::new(keeping);
    }
    let ada = add_user(&store, "ada@example.com").await;
    let now = Utc::now();
    // Past the hour the history partition ends at (PostgreSQL).
    let hour = DateTime::from_timestamp(now.timestamp() - now.timestamp() % 3600, 0).unwrap();
    let t = hour + chrono::Duration::hours(3);
    let minutes = chrono::Duration::minutes;
    let plan = [
        ("a", now - chrono::Duration::days(3)),
        ("b", now - minutes(1)),
        ("a", t + minutes(10)),
        ("b", t + minutes(50)),
        ("a", t + minutes(90)),
    ];
    let mut events = Vec::new();
    for (kind, at) in plan {
        let (event, write) = event_at(ada.id, kind, at);
        store.write_one(write).await.unwrap();
        events.push(event);
    }
    let before = t + minutes(30);
    let (removed, failed) = expire_events(store.as_ref(), before, 2).await;
    assert!(failed.is_none(), "{failed:?}");
    assert_eq!(removed, 3);
    for (n, event) in events.iter().enumerate() {
        let found = store.get_event(event.id).await.unwrap();
        assert_eq!(found.is_some(), n >= 3, "event {n} ({})", event.created_at);
    }
    let total = |user_id: Option<Uuid>, kind: Option<&str>| {
        let filter = EventFilter {
            user_id,
            event_type: kind.map(|k| EventType::parse("type", k).unwrap()),
        };
        let store = store.clone();
        async move {
            let page = store
                .list_events(
                    &filter,
                    Page {
                        limit: 100,
                        ..Page::default()
                    },
                )
                .await
                .unwrap();
            (page.items.len() as u64, page.total)
        }
    };
    assert_eq!(total(None, None).await, (2, 2));
    assert_eq!(total(Some(ada.id), None).await, (2, 2));
    assert_eq!(total(None, Some("a")).await, (1, 1));
    assert_eq!(total(Some(ada.id), Some("b")).await, (1, 1));
    assert_eq!(store.expire_events(before, 2).await.unwrap(), 0);

    let (_, later) = event_at(ada.id, "a", t + minutes(40));
    store.write_one(later).await.unwrap();
    assert_eq!(total(None, None).await, (3, 3));
    if let Place::Postgres { options, .. } = &db.place {
        let pool = sqlx::PgPool::connect_with((**options).clone())
            .await
            .unwrap();
        let history: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('events_history')::text")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(history, None, "the history partition is dropped whole");
        pool.close().await;
        store.close().await;
    }
    db.finish().await;
}
