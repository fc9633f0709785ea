//! The SQL store's conformance suite: every test of [`conformance!`] runs
//! on SQLite and on PostgreSQL, through [`Backend`], which opens a fresh,
//! migrated database of either and checks a statement's plan as each
//! database explains it. The PostgreSQL tests are ignored in a plain
//! `cargo test`; `cargo test -- --include-ignored` runs them, and then a
//! PostgreSQL that does not answer (`TEST_DATABASE_URL`, by default the one
//! `scripts/dev-services.sh` starts) fails them rather than skipping them.
//! Tests of PostgreSQL's own behaviour are in [`postgres_only`].
//!
//! The batch contract, on both backends: each write of a batch gets its
//! own outcome, and a rejected write leaves no trace while the others
//! commit with their outbox rows.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use super::read::bind_event_filter;
use super::statements::{placeholders, placeholders_from, values};
use super::write::lock_order;
use super::{Dialect, SqlStore};
use crate::domain::{
    self, Email, Event, EventFilter, EventMessage, Page, PersonName, User, UserPatch,
};
use crate::store::postgres::{Pg, PostgresStore};
use crate::store::sqlite::{Lite, SqliteStore};
use crate::store::{OutboxRow, Outcome, Store, StoreError, Write, Written};

mod expiry;
mod postgres_only;
mod pruning;

use expiry::expired_events_leave_with_their_totals;
use pruning::processed_ids_are_forgotten_oldest_first_and_only_before_the_cut;

/// Defines each listed `async fn name<D: Backend>()` as a test on SQLite
/// and one on PostgreSQL (ignored unless asked for, see above).
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name::<crate::store::sqlite::Lite>().await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                #[ignore = "needs PostgreSQL (TEST_DATABASE_URL); run with --include-ignored"]
                async fn $name() {
                    super::$name::<crate::store::postgres::Pg>().await;
                }
            )+
        }
    };
}

conformance!(
    batches_give_each_write_its_own_outcome,
    outbox_leases_belong_to_their_holder,
    lists_read_an_index_in_order,
    an_activity_is_read_from_one_snapshot,
    a_page_and_its_total_are_read_from_one_snapshot,
    processed_ids_are_forgotten_oldest_first_and_only_before_the_cut,
    expired_events_leave_with_their_totals,
);

/// What the suite needs of a backend beyond its [`Dialect`].
trait Backend: Dialect + Sized {
    /// A migrated store on a database of its own.
    async fn fresh() -> Fresh;

    /// Fails unless each of `lists` (statements of [`SqlStore::list_users_sql`]
    /// and [`SqlStore::list_events_sql`]) reads an index in the list's
    /// order: no sort, however deep the page.
    async fn assert_lists_read_an_index_in_order(db: &Fresh, lists: Vec<List>);
}

/// A test's store, and the database it keeps until [`Fresh::finish`].
struct Fresh {
    store: Arc<dyn Store>,
    place: Place,
}

/// Where a test's database is.
enum Place {
    /// The directory of a SQLite file, `t.db`.
    Sqlite(tempfile::TempDir),
    /// A database of its own on PostgreSQL, dropped by [`Fresh::finish`].
    Postgres {
        admin: sqlx::PgPool,
        name: String,
        /// Boxed: the options are large.
        options: Box<PgConnectOptions>,
    },
}

impl Fresh {
    fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// Closes the store and drops a PostgreSQL database.
    async fn finish(self) {
        self.store.close().await;
        if let Place::Postgres { admin, name, .. } = self.place {
            drop_database(&admin, &name).await;
        }
    }
}

/// Drops a database of [`postgres_database`].
async fn drop_database(admin: &sqlx::PgPool, name: &str) {
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(admin)
        .await
        .unwrap();
}

/// One list statement, as [`SqlStore`] writes it, with what it binds.
struct List {
    table: &'static str,
    sql: String,
    /// The events' filter; `None` for the users.
    filter: Option<EventFilter>,
    seek: bool,
}

/// Every list statement of `D`.
fn lists<D: Dialect>() -> Vec<List> {
    let mut lists = vec![
        List {
            table: "users",
            sql: SqlStore::<D>::list_users_sql(false),
            filter: None,
            seek: false,
        },
        List {
            table: "users",
            sql: SqlStore::<D>::list_users_sql(true),
            filter: None,
            seek: true,
        },
    ];
    for (filter, seek) in list_shapes() {
        lists.push(List {
            table: "events",
            sql: SqlStore::<D>::list_events_sql(&filter, seek),
            filter: Some(filter),
            seek,
        });
    }
    lists
}

async fn batches_give_each_write_its_own_outcome<D: Backend>() {
    let db = D::fresh().await;
    batch_writes_have_their_own_outcomes(db.store()).await;
    db.finish().await;
}

async fn outbox_leases_belong_to_their_holder<D: Backend>() {
    let db = D::fresh().await;
    outbox_leases_belong_to_their_holder_on(db.store()).await;
    db.finish().await;
}

async fn lists_read_an_index_in_order<D: Backend>() {
    let db = D::fresh().await;
    D::assert_lists_read_an_index_in_order(&db, lists::<D>()).await;
    db.finish().await;
}

/// While messages are applied, every activity read adds up: its total is
/// the sum of its per-type counts, never a total from before a message
/// with a count from after it.
async fn an_activity_is_read_from_one_snapshot<D: Backend>() {
    let db = D::fresh().await;
    let store = db.store();
    let user_id = Uuid::now_v7();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 0..200 {
                let message = EventMessage {
                    id: Uuid::now_v7(),
                    user_id,
                    event_type: format!("kind_{}", n % 7),
                    data: "{}".to_owned(),
                    timestamp: DateTime::from_timestamp(1_800_000_000 + n, 0).unwrap(),
                    trace: None,
                };
                store.write_one(Write::ApplyMessage(message)).await.unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let activity = store.get_activity(user_id).await.unwrap();
        let by_type: u64 = activity.events_by_type.values().sum();
        assert_eq!(activity.total_events, by_type, "read {reads}: {activity:?}");
        reads += 1;
    }
    writer.await.unwrap();
    let activity = store.get_activity(user_id).await.unwrap();
    assert_eq!(activity.total_events, 200);
    assert_eq!(activity.events_by_type.len(), 7);
    db.finish().await;
}

/// While events are added, a list's total always counts the rows its
/// page holds (all of them fit in one page here).
async fn a_page_and_its_total_are_read_from_one_snapshot<D: Backend>() {
    let db = D::fresh().await;
    let store = db.store();
    let ada = add_user(&store, "ada@example.com").await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..90 {
                store.write_one(event(ada.id)).await.unwrap();
            }
        })
    };
    let filter = EventFilter {
        user_id: Some(ada.id),
        event_type: None,
    };
    let page = Page {
        limit: 100,
        ..Page::default()
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let listed = store.list_events(&filter, page).await.unwrap();
        assert_eq!(listed.total, listed.items.len() as u64, "read {reads}");
        reads += 1;
    }
    writer.await.unwrap();
    assert_eq!(store.list_events(&filter, page).await.unwrap().total, 90);
    db.finish().await;
}

/// PostgreSQL numbers every parameter; SQLite leaves a list that holds
/// all of its statement's parameters unnumbered, and numbers one that
/// follows the statement's own (`$1`, `$2`) from where they end. The
/// batch tests below bind through both forms on both backends.
#[test]
fn generated_lists_write_parameters_as_each_backend_finds_them() {
    assert_eq!(values::<Pg>(2, 3), "($1, $2, $3), ($4, $5, $6)");
    assert_eq!(values::<Lite>(2, 3), "(?, ?, ?), (?, ?, ?)");
    assert_eq!(placeholders::<Pg>(2), "($1, $2)");
    assert_eq!(placeholders::<Lite>(2), "(?, ?)");
    assert_eq!(placeholders_from::<Pg>(3, 2), "($3, $4)");
    assert_eq!(placeholders_from::<Lite>(3, 2), "(?3, ?4)");
}

#[test]
fn batches_take_new_emails_then_users_then_events_each_in_key_order() {
    let (zoe, zoe_created) = user("zoe@example.com");
    let (ada, ada_created) = user("ada@example.com");
    let writes = [
        event(zoe.id),
        Write::CreateUser {
            user: zoe.clone(),
            message: zoe_created,
        },
        Write::UpdateUser {
            id: zoe.id,
            patch: UserPatch::default(),
            at: domain::now(),
            trace: None,
        },
        Write::CreateUser {
            user: ada.clone(),
            message: ada_created,
        },
        // Ada's id came after Zoe's (ids grow with time).
        Write::DeleteUser {
            id: ada.id,
            message: EventMessage::user_deleted(ada.id, domain::now()),
        },
    ];
    assert!(zoe.id < ada.id);
    assert_eq!(lock_order(&writes), [3, 1, 2, 4, 0]);
}

fn user(email: &str) -> (User, EventMessage) {
    crate::store::new_user(email)
}

fn event(user_id: Uuid) -> Write {
    event_at(user_id, "click", domain::now()).1
}

/// A new event of `user_id` of type `kind`, created `at`, and its write.
fn event_at(user_id: Uuid, kind: &str, at: DateTime<Utc>) -> (Event, Write) {
    let event = Event {
        id: Uuid::now_v7(),
        user_id,
        event_type: kind.into(),
        data: "{}".into(),
        created_at: at,
    };
    let write = Write::CreateEvent {
        message: EventMessage::for_event(&event),
        event: event.clone(),
    };
    (event, write)
}

/// Creates a user with `email` in `store`.
async fn add_user(store: &Arc<dyn Store>, email: &str) -> User {
    let (user, message) = user(email);
    store
        .write_one(Write::CreateUser {
            user: user.clone(),
            message,
        })
        .await
        .unwrap();
    user
}

fn kinds(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .map(|o| match o {
            Ok(Written::Created) => "created".to_owned(),
            Ok(Written::Updated(u)) => format!("updated {}", u.first_name),
            Ok(Written::Deleted { event_ids }) => format!("deleted {}", event_ids.len()),
            Ok(Written::Applied(fresh)) => format!("applied {fresh}"),
            Err(e) => format!("error: {e}"),
        })
        .collect()
}

async fn batch_writes_have_their_own_outcomes(store: Arc<dyn Store>) {
    store.migrate().await.unwrap();
    let (ada, ada_created) = user("ada@example.com");
    let (twin, twin_created) = user("ada@example.com");
    let (grace, grace_created) = user("grace@example.com");
    let patch = UserPatch {
        first_name: Some(PersonName::parse("first_name", "Augusta").unwrap()),
        ..UserPatch::default()
    };
    let steal = UserPatch {
        email: Some(Email::parse("email", "ada@example.com").unwrap()),
        ..UserPatch::default()
    };
    // Grace was created before: a client names only users it has
    // seen created.
    let written = store
        .write_one(Write::CreateUser {
            user: grace.clone(),
            message: grace_created,
        })
        .await;
    assert!(matches!(written, Ok(Written::Created)), "{written:?}");
    let at = domain::now();
    let outcomes = store
        .write(&[
            Write::CreateUser {
                user: ada.clone(),
                message: ada_created,
            },
            Write::CreateUser {
                user: twin.clone(),
                message: twin_created,
            },
            event(ada.id),
            event(twin.id),
            Write::UpdateUser {
                id: ada.id,
                patch: patch.clone(),
                at,
                trace: None,
            },
            Write::UpdateUser {
                id: grace.id,
                patch: steal,
                at,
                trace: None,
            },
            Write::UpdateUser {
                id: Uuid::now_v7(),
                patch,
                at,
                trace: None,
            },
            Write::DeleteUser {
                id: Uuid::now_v7(),
                message: EventMessage::user_deleted(Uuid::now_v7(), at),
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        kinds(&outcomes),
        [
            "created",
            "error: email is already taken",
            "created",
            "error: user does not exist",
            "updated Augusta",
            "error: email is already taken",
            "error: user does not exist",
            "error: user does not exist",
        ]
    );

    // What was rejected left nothing behind; the rest committed.
    assert_eq!(
        store.get_user(ada.id).await.unwrap().unwrap().first_name,
        "Augusta"
    );
    assert_eq!(
        store.get_user(grace.id).await.unwrap().unwrap().email,
        "grace@example.com"
    );
    assert!(store.get_user(twin.id).await.unwrap().is_none());
    let listed = store
        .list_events(&EventFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!(listed.total, 1);
    assert_eq!(listed.items[0].user_id, ada.id);
    let outbox = store
        .claim_outbox(Uuid::new_v4(), 100, Duration::from_secs(60))
        .await
        .unwrap();
    let types: Vec<(String, String)> = outbox
        .iter()
        .map(|row| {
            let message: EventMessage = serde_json::from_str(&row.payload).unwrap();
            (row.key.clone(), message.event_type)
        })
        .collect();
    let (a, g) = (ada.id.to_string(), grace.id.to_string());
    // In the batch's lock order: new users, updates, then events.
    assert_eq!(
        types,
        [
            (g, "user_created".to_owned()),
            (a.clone(), "user_created".to_owned()),
            (a.clone(), "user_updated".to_owned()),
            (a.clone(), "click".to_owned()),
        ]
    );

    // A message applied twice in one batch counts once.
    let message = EventMessage::user_deleted(ada.id, domain::now());
    let applied = store
        .write(&[
            Write::ApplyMessage(message.clone()),
            Write::ApplyMessage(message),
            Write::DeleteUser {
                id: ada.id,
                message: EventMessage::user_deleted(ada.id, domain::now()),
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        kinds(&applied),
        ["applied true", "applied false", "deleted 1"]
    );
    assert_eq!(store.get_activity(ada.id).await.unwrap().total_events, 1);
    assert!(store.get_user(ada.id).await.unwrap().is_none());

    // Messages for two users in one batch: each new one counts once,
    // by type, at its own time; one applied before and one repeated in
    // the batch count nothing.
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let message = |user_id: Uuid, kind: &str, seconds: i64| EventMessage {
        id: Uuid::now_v7(),
        user_id,
        event_type: kind.to_owned(),
        data: "{}".to_owned(),
        timestamp: DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap(),
        trace: None,
    };
    let before = message(first, "login", 5);
    assert_eq!(
        kinds(&[store.write_one(Write::ApplyMessage(before.clone())).await]),
        ["applied true"]
    );
    let repeated = message(second, "login", 1);
    let batch = [
        message(second, "click", 3),
        before,
        message(first, "click", 9),
        repeated.clone(),
        message(first, "login", 2),
        repeated,
        message(second, "click", 2),
    ];
    let applied = store.write(&batch.map(Write::ApplyMessage)).await.unwrap();
    assert_eq!(
        kinds(&applied),
        [
            "applied true",
            "applied false",
            "applied true",
            "applied true",
            "applied true",
            "applied false",
            "applied true",
        ]
    );
    let at = |seconds: i64| DateTime::from_timestamp(1_800_000_000 + seconds, 0);
    let first_activity = store.get_activity(first).await.unwrap();
    assert_eq!(first_activity.total_events, 3);
    assert_eq!(first_activity.events_by_type["login"], 2);
    assert_eq!(first_activity.events_by_type["click"], 1);
    assert_eq!(first_activity.last_event_at, at(9));
    let second_activity = store.get_activity(second).await.unwrap();
    assert_eq!(second_activity.total_events, 3);
    assert_eq!(second_activity.events_by_type["login"], 1);
    assert_eq!(second_activity.events_by_type["click"], 2);
    assert_eq!(second_activity.last_event_at, at(3));

    // Alone, a rejected write is still its own outcome, not the batch's.
    let (again, again_created) = user("grace@example.com");
    let alone = store
        .write_one(Write::CreateUser {
            user: again,
            message: again_created,
        })
        .await;
    assert!(matches!(alone, Err(StoreError::EmailTaken)), "{alone:?}");
}

/// Leases: a held row is claimed by no one else; a holder renews and
/// releases only rows that still carry its id; once a lease runs out
/// another relay claims the row, and the first holder hears it lost it.
async fn outbox_leases_belong_to_their_holder_on(store: Arc<dyn Store>) {
    let email = format!("lease-{}@example.com", Uuid::new_v4().simple());
    let (user, created) = user(&email);
    let written = store
        .write_one(Write::CreateUser {
            user,
            message: created,
        })
        .await;
    assert!(matches!(written, Ok(Written::Created)), "{written:?}");
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let long = Duration::from_secs(60);
    let ids_of = |rows: Vec<OutboxRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();

    let ids = ids_of(store.claim_outbox(first, 100, long).await.unwrap());
    assert_eq!(ids.len(), 1);
    assert!(
        store
            .claim_outbox(second, 100, long)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.renew_outbox(first, &ids, long).await.unwrap(), ids);
    assert!(
        store
            .renew_outbox(second, &ids, long)
            .await
            .unwrap()
            .is_empty()
    );
    store.release_outbox(second, &ids).await.unwrap();
    assert!(
        store
            .claim_outbox(second, 100, long)
            .await
            .unwrap()
            .is_empty(),
        "a release by another relay leaves the lease alone"
    );

    // The first holder's lease runs out: the second claims the row.
    store
        .renew_outbox(first, &ids, Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        ids_of(store.claim_outbox(second, 100, long).await.unwrap()),
        ids
    );
    assert!(
        store
            .renew_outbox(first, &ids, long)
            .await
            .unwrap()
            .is_empty(),
        "the first holder hears it lost the row"
    );
    store.release_outbox(first, &ids).await.unwrap();
    assert!(
        store
            .claim_outbox(first, 100, long)
            .await
            .unwrap()
            .is_empty(),
        "the second holder keeps it"
    );
    store.release_outbox(second, &ids).await.unwrap();
    assert_eq!(
        ids_of(store.claim_outbox(first, 100, long).await.unwrap()),
        ids
    );
    store.complete_outbox(&ids).await.unwrap();
    assert!(
        store
            .claim_outbox(second, 100, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Every way a list can be asked for: each filter, by page number or
/// by cursor.
fn list_shapes() -> Vec<(EventFilter, bool)> {
    let user_id = Some(Uuid::now_v7());
    let event_type = Some(crate::domain::EventType::parse("type", "click").unwrap());
    let filters = [
        EventFilter::default(),
        EventFilter {
            user_id,
            ..EventFilter::default()
        },
        EventFilter {
            event_type: event_type.clone(),
            ..EventFilter::default()
        },
        EventFilter {
            user_id,
            event_type,
        },
    ];
    filters
        .into_iter()
        .flat_map(|filter| [(filter.clone(), false), (filter, true)])
        .collect()
}

impl Backend for Lite {
    async fn fresh() -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::migrated_in(dir.path(), 2).await;
        Fresh {
            store: Arc::new(store),
            place: Place::Sqlite(dir),
        }
    }

    async fn assert_lists_read_an_index_in_order(db: &Fresh, lists: Vec<List>) {
        let Place::Sqlite(dir) = &db.place else {
            unreachable!("a SQLite store in a directory")
        };
        let pool = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("t.db")),
        )
        .await
        .unwrap();
        for List { table, sql, .. } in lists {
            let plan = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .iter()
                .map(|row| sqlx::Row::get::<String, _>(row, "detail"))
                .collect::<Vec<_>>()
                .join("\n");
            // The index the table is read through, named in the plan's line
            // for the table: "SCAN|SEARCH <table> USING [COVERING] INDEX <name> …".
            let index = plan
                .lines()
                .find(|line| {
                    line.contains(&format!("SCAN {table} USING"))
                        || line.contains(&format!("SEARCH {table} USING"))
                })
                .and_then(|line| line.split("INDEX ").nth(1))
                .and_then(|rest| rest.split_whitespace().next());
            let Some(index) = index else {
                panic!("{sql}: no index read\n{plan}")
            };
            assert!(!plan.contains("TEMP B-TREE"), "{sql}\n{plan}");
            if table == "events" {
                // Every event list tests user_id against deleted_users on
                // each row it passes, those an OFFSET skips too: the index
                // must hold user_id, or each of them is a seek into the
                // table.
                let columns: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM pragma_index_info(?)")
                        .bind(index)
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                assert!(
                    columns.iter().any(|c| c == "user_id"),
                    "{sql} reads {index} ({columns:?})\n{plan}"
                );
            }
        }
        pool.close().await;
    }
}

impl Backend for Pg {
    async fn fresh() -> Fresh {
        let (admin, name, options) = postgres_database().await;
        let store = PostgresStore::connect_lazy(options.clone(), 4, Duration::from_secs(5), None);
        store.migrate().await.unwrap();
        Fresh {
            store: Arc::new(store),
            place: Place::Postgres {
                admin,
                name,
                options: Box::new(options),
            },
        }
    }

    async fn assert_lists_read_an_index_in_order(db: &Fresh, lists: Vec<List>) {
        let Place::Postgres { options, .. } = &db.place else {
            unreachable!("a PostgreSQL store in a database of its own")
        };
        // The tables are empty, so any plan is cheap: price out the plans
        // that need no index in the lists' order. A list that no index can
        // serve in order still sorts, and that is what must not show.
        let pool = sqlx::PgPool::connect_with(PgConnectOptions::clone(options))
            .await
            .unwrap();
        let mut tx = pool.begin().await.unwrap();
        for setting in ["enable_seqscan", "enable_bitmapscan", "enable_sort"] {
            sqlx::query(&format!("SET LOCAL {setting} = off"))
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        let now = crate::domain::now();
        for List {
            sql, filter, seek, ..
        } in lists
        {
            let explain = format!("EXPLAIN {sql}");
            let mut query = sqlx::query(&explain);
            if let Some(filter) = &filter {
                query = bind_event_filter(query, filter);
            }
            if seek {
                query = query.bind(now).bind(Uuid::now_v7());
            }
            let plan: Vec<String> = query
                .bind(11_i64)
                .bind(0_i64)
                .try_map(|row: sqlx::postgres::PgRow| sqlx::Row::try_get::<String, _>(&row, 0))
                .fetch_all(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let plan = plan.join("\n");
            assert!(plan.contains("Index"), "{sql}\n{plan}");
            assert!(!plan.contains("Sort"), "{sql}\n{plan}");
        }
        tx.rollback().await.unwrap();
        pool.close().await;
    }
}

/// A database of its own on the PostgreSQL of `TEST_DATABASE_URL`,
/// and how to reach it; the caller drops it.
pub(super) async fn postgres_database() -> (sqlx::PgPool, String, PgConnectOptions) {
    let admin_url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned());
    let admin = sqlx::PgPool::connect(&admin_url)
        .await
        .expect("PostgreSQL must be running (scripts/dev-services.sh)");
    let name = format!("highload_store_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let options = admin_url
        .parse::<PgConnectOptions>()
        .unwrap()
        .database(&name);
    (admin, name, options)
}
