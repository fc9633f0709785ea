//! Hostile input: characters a database cannot store or a reader cannot
//! see, spellings of one email address, numbers beyond the documented
//! range. Each is a 400 naming the field (or a 409 for a taken address) on
//! both stacks, never a 500 and never stored; and the OpenAPI document
//! states the same rules.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

use crate::helpers::{Stack, TestApp, assert_problem, spawn_app, spawn_app_with};

crate::stack_tests!(
    one_spelling_of_a_local_part_however_its_characters_are_composed,
    a_name_that_begins_with_a_combining_mark_is_400,
    nul_in_event_data_is_400_naming_data,
    nul_in_any_text_field_or_query_parameter_is_400_naming_it,
    create_user_returns_409_for_a_case_variant_of_a_taken_email,
    update_user_returns_409_for_a_case_variant_of_another_users_email,
    unicode_and_punycode_spellings_of_a_domain_are_one_address,
    email_with_an_invisible_character_is_400,
    names_need_a_visible_character_and_no_stray_invisible_ones,
    page_beyond_int32_is_400_on_both_lists,
    the_openapi_document_states_what_the_server_enforces,
    existing_case_variants_survive_the_email_migration,
);

fn user_body(email: &str) -> Value {
    json!({ "email": email, "first_name": "Ada", "last_name": "Lovelace" })
}

async fn nul_in_event_data_is_400_naming_data(stack: Stack) {
    let app = spawn_app(stack).await;
    let user = app.create_user().await;
    let user_id = user["id"].as_str().unwrap();
    let response = app
        .post(
            "/api/v1/events",
            &json!({ "user_id": user_id, "type": "login", "data": "a\u{0}b" }),
        )
        .await;
    let body = assert_problem(response, 400, Some("data")).await;
    assert!(body["detail"].as_str().unwrap().contains("NUL"), "{body}");
    let listed: Value = app
        .get(&format!("/api/v1/events?user_id={user_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["total"], 0, "nothing stored: {listed}");
    // Every other control character is data like any other.
    let response = app
        .post(
            "/api/v1/events",
            &json!({ "user_id": user_id, "type": "login", "data": "\u{1}\u{7f}\u{200B}" }),
        )
        .await;
    assert_eq!(response.status(), 201);
}

async fn nul_in_any_text_field_or_query_parameter_is_400_naming_it(stack: Stack) {
    let app = spawn_app(stack).await;
    let user = app.create_user().await;
    let id = user["id"].as_str().unwrap();
    let fields = [
        ("email", "ada\u{0}@example.com"),
        ("email", "ada@exa\u{0}mple.com"),
        ("first_name", "A\u{0}da"),
        ("last_name", "\u{0}"),
    ];
    for (field, value) in fields {
        let mut body = json!({ "email": "nul@example.com", "first_name": "A", "last_name": "B" });
        body[field] = json!(value);
        let response = app.post("/api/v1/users", &body).await;
        assert_problem(response, 400, Some(field)).await;
        let response = app
            .put(&format!("/api/v1/users/{id}"), &json!({ field: value }))
            .await;
        assert_problem(response, 400, Some(field)).await;
    }
    let response = app
        .post(
            "/api/v1/events",
            &json!({ "user_id": id, "type": "log\u{0}in", "data": "" }),
        )
        .await;
    assert_problem(response, 400, Some("type")).await;
    for (query, field) in [
        ("type=a%00b", "type"),
        ("type=%00", "type"),
        ("user_id=%00", "user_id"),
        ("page=1%00", "page"),
        ("limit=%0010", "limit"),
    ] {
        let response = app.get(&format!("/api/v1/events?{query}")).await;
        assert_problem(response, 400, Some(field)).await;
    }
    let response = app.get("/api/v1/users?page=%00").await;
    assert_problem(response, 400, Some("page")).await;
}

async fn create_user_returns_409_for_a_case_variant_of_a_taken_email(stack: Stack) {
    let app = spawn_app(stack).await;
    let response = app
        .post("/api/v1/users", &user_body("Ada@example.com"))
        .await;
    assert_eq!(response.status(), 201);
    let ada: Value = response.json().await.unwrap();
    assert_eq!(ada["email"], "ada@example.com", "stored in canonical form");
    for variant in ["ada@example.com", "ADA@EXAMPLE.COM", " aDa@Example.com "] {
        let response = app.post("/api/v1/users", &user_body(variant)).await;
        assert_problem(response, 409, Some("email")).await;
    }
    let list: Value = app.get("/api/v1/users").await.json().await.unwrap();
    assert_eq!(list["total"], 1);
}

async fn one_spelling_of_a_local_part_however_its_characters_are_composed(stack: Stack) {
    let app = spawn_app(stack).await;
    // é as one character, then as e and a combining acute accent.
    let first = app
        .post("/api/v1/users", &user_body("ren\u{e9}@example.com"))
        .await;
    assert_eq!(first.status(), 201);
    let decomposed = app
        .post("/api/v1/users", &user_body("rene\u{301}@example.com"))
        .await;
    assert_problem(decomposed, 409, Some("email")).await;
    // Full-width letters are their ASCII forms.
    let ascii = app
        .post("/api/v1/users", &user_body("ada@example.com"))
        .await;
    assert_eq!(ascii.status(), 201);
    let wide = app
        .post(
            "/api/v1/users",
            &user_body("\u{ff41}\u{ff44}\u{ff41}@example.com"),
        )
        .await;
    assert_problem(wide, 409, Some("email")).await;
    let list: Value = app.get("/api/v1/users").await.json().await.unwrap();
    assert_eq!(list["total"], 2);
}

async fn a_name_that_begins_with_a_combining_mark_is_400(stack: Stack) {
    let app = spawn_app(stack).await;
    for (n, bad) in ["\u{300}", "\u{301}Ann"].into_iter().enumerate() {
        let body =
            json!({ "email": format!("mark{n}@example.com"), "first_name": bad, "last_name": "B" });
        let problem = assert_problem(
            app.post("/api/v1/users", &body).await,
            400,
            Some("first_name"),
        )
        .await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("combining mark"),
            "{problem}"
        );
    }
    let accented =
        json!({ "email": "zoe@example.com", "first_name": "Zoe\u{308}", "last_name": "B" });
    assert_eq!(app.post("/api/v1/users", &accented).await.status(), 201);
}

async fn update_user_returns_409_for_a_case_variant_of_another_users_email(stack: Stack) {
    let app = spawn_app(stack).await;
    let response = app
        .post("/api/v1/users", &user_body("ada@example.com"))
        .await;
    assert_eq!(response.status(), 201);
    let grace = app.create_user().await;
    let path = format!("/api/v1/users/{}", grace["id"].as_str().unwrap());
    for variant in ["Ada@example.com", "ADA@EXAMPLE.COM"] {
        let response = app.put(&path, &json!({ "email": variant })).await;
        assert_problem(response, 409, Some("email")).await;
    }
    let unchanged: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(unchanged["email"], grace["email"]);
    // A user may respell their own address: it stays theirs.
    let own = grace["email"].as_str().unwrap().to_uppercase();
    let response = app.put(&path, &json!({ "email": own })).await;
    assert_eq!(response.status(), 200);
    let respelled: Value = response.json().await.unwrap();
    assert_eq!(respelled["email"], grace["email"]);
}

async fn unicode_and_punycode_spellings_of_a_domain_are_one_address(stack: Stack) {
    let app = spawn_app(stack).await;
    let response = app.post("/api/v1/users", &user_body("ada@bücher.de")).await;
    assert_eq!(response.status(), 201);
    let ada: Value = response.json().await.unwrap();
    assert_eq!(ada["email"], "ada@xn--bcher-kva.de");
    for variant in [
        "ada@xn--bcher-kva.de",
        "ADA@BÜCHER.DE",
        "ada@XN--BCHER-KVA.de",
    ] {
        let response = app.post("/api/v1/users", &user_body(variant)).await;
        assert_problem(response, 409, Some("email")).await;
    }
    let grace = app.create_user().await;
    let response = app
        .put(
            &format!("/api/v1/users/{}", grace["id"].as_str().unwrap()),
            &json!({ "email": "Ada@Bücher.de" }),
        )
        .await;
    assert_problem(response, 409, Some("email")).await;
}

async fn email_with_an_invisible_character_is_400(stack: Stack) {
    let app = spawn_app(stack).await;
    let response = app
        .post("/api/v1/users", &user_body("ada@example.com"))
        .await;
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for invisible in [
        "ada\u{200B}@example.com",
        "ada@example\u{200C}.com",
        "a\u{200D}da@example.com",
        "ada@exam\u{2060}ple.com",
        "\u{FEFF}ada@example.com",
    ] {
        let response = app.post("/api/v1/users", &user_body(invisible)).await;
        let body = assert_problem(response, 400, Some("email")).await;
        assert!(
            body["detail"].as_str().unwrap().contains("invisible"),
            "{invisible:?}: {body}"
        );
        let response = app
            .put(
                &format!("/api/v1/users/{id}"),
                &json!({ "email": invisible }),
            )
            .await;
        assert_problem(response, 400, Some("email")).await;
    }
}

async fn names_need_a_visible_character_and_no_stray_invisible_ones(stack: Stack) {
    let app = spawn_app(stack).await;
    let user = app.create_user().await;
    let path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());
    for (n, bad) in [
        "\u{200B}",
        "\u{FEFF}",
        "\u{3164}",
        "\u{115F}\u{1160}",
        " \u{200B} \u{FEFF} ",
        "An\u{200B}n",
        "Ann\u{FEFF}",
        "\u{202E}nnA",
    ]
    .into_iter()
    .enumerate()
    {
        for field in ["first_name", "last_name"] {
            let mut body = json!({ "email": format!("blank{n}@example.com"), "first_name": "A", "last_name": "B" });
            body[field] = json!(bad);
            let response = app.post("/api/v1/users", &body).await;
            assert_problem(response, 400, Some(field)).await;
            let response = app.put(&path, &json!({ field: bad })).await;
            assert_problem(response, 400, Some(field)).await;
        }
    }
    // Persian spelling needs a zero-width non-joiner between letters.
    let response = app
        .put(&path, &json!({ "first_name": "مهر\u{200C}آسا" }))
        .await;
    assert_eq!(response.status(), 200);
    let list: Value = app.get("/api/v1/users").await.json().await.unwrap();
    assert_eq!(list["total"], 1, "no blank-named user was stored");
}

async fn page_beyond_int32_is_400_on_both_lists(stack: Stack) {
    let app = spawn_app(stack).await;
    for list in ["/api/v1/users", "/api/v1/events"] {
        for page in ["2147483648", "4294967295", "4294967296"] {
            let response = app.get(&format!("{list}?page={page}")).await;
            assert_problem(response, 400, Some("page")).await;
        }
        let response = app.get(&format!("{list}?page=2147483647&limit=100")).await;
        assert_eq!(response.status(), 200, "{list}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["page"], 2_147_483_647);
    }
}

/// The schema of a documented operation's query parameter.
fn parameter<'a>(doc: &'a Value, path: &str, name: &str) -> &'a Value {
    doc["paths"][path]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{path} documents {name}"))
        .get("schema")
        .unwrap()
}

/// The schema of a request body's property.
fn property<'a>(doc: &'a Value, schema: &str, name: &str) -> &'a Value {
    &doc["components"]["schemas"][schema]["properties"][name]
}

async fn the_openapi_document_states_what_the_server_enforces(stack: Stack) {
    let app = spawn_app(stack).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    for path in ["/api/v1/users", "/api/v1/events"] {
        let page = parameter(&doc, path, "page");
        assert_eq!(page["minimum"], 1, "{path}");
        assert_eq!(page["maximum"], i64::from(i32::MAX), "{path}");
        let limit = parameter(&doc, path, "limit");
        assert_eq!(
            (&limit["minimum"], &limit["maximum"]),
            (&json!(1), &json!(100))
        );
    }
    let query_type = parameter(&doc, "/api/v1/events", "type");
    assert_eq!(query_type["maxLength"], 100);
    assert_eq!(query_type["pattern"], "^[A-Za-z0-9_.:-]{1,100}$");
    let body_type = property(&doc, "CreateEvent", "type");
    assert_eq!(body_type["maxLength"], 100);
    assert_eq!(body_type["pattern"], query_type["pattern"]);
    for schema in ["CreateUser", "UpdateUser"] {
        let email = property(&doc, schema, "email");
        assert_eq!(email["maxLength"], 255, "{schema}");
        assert_eq!(email["format"], "email", "{schema}");
    }

    // What the name schema calls valid, the server accepts; what it calls
    // invalid, the server refuses (joiners between letters aside, which the
    // pattern leaves out).
    let user = app.create_user().await;
    let path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());
    for schema in ["CreateUser", "UpdateUser"] {
        let name = property(&doc, schema, "first_name");
        assert_eq!(
            (&name["minLength"], &name["maxLength"]),
            (&json!(1), &json!(100))
        );
        let validator = jsonschema::draft202012::new(name).expect("a valid name schema");
        for candidate in [
            "Ada",
            "  Ada ",
            "Zoë O'Brien-Smith",
            "李小龍",
            "한국",
            "\u{200B}",
            "\u{FEFF}",
            "\u{3164}",
            "\u{FFA0}",
            "\u{2800}",
            " ",
            "\u{3000}",
            "A\u{0}",
            "A\u{85}B",
            "An\u{200B}n",
            "A\u{2066}B",
            "\u{00AD}",
        ] {
            let documented = validator.is_valid(&json!(candidate));
            let answered = app.put(&path, &json!({ "first_name": candidate })).await;
            assert_eq!(
                documented,
                answered.status() == 200,
                "{schema} {candidate:?}: documented valid = {documented}, server {}",
                answered.status()
            );
        }
    }
}

/// Inserts a user as an earlier version stored it, behind the app's back.
async fn insert_user_directly(app: &TestApp, id: uuid::Uuid, email: &str, at: DateTime<Utc>) {
    let sql = "INSERT INTO users (id, email, first_name, last_name, created_at, updated_at) \
               VALUES ($1, $2, 'Legacy', 'Row', $3, $3)";
    match app.data.database() {
        Some(options) => {
            let pool = sqlx::PgPool::connect_with(options).await.unwrap();
            sqlx::query(sql)
                .bind(id)
                .bind(email)
                .bind(at)
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        None => {
            let pool =
                sqlx::SqlitePool::connect(&format!("sqlite://{}", app.sqlite_path().display()))
                    .await
                    .unwrap();
            sqlx::query(sql)
                .bind(id)
                .bind(email)
                .bind(at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }
}

/// Forgets that migration `version` ran, so that the next start runs it.
async fn unapply_migration(app: &TestApp, version: i64) {
    let sql = "DELETE FROM _sqlx_migrations WHERE version = $1";
    match app.data.database() {
        Some(options) => {
            let pool = sqlx::PgPool::connect_with(options).await.unwrap();
            let done = sqlx::query(sql).bind(version).execute(&pool).await.unwrap();
            assert_eq!(done.rows_affected(), 1);
            pool.close().await;
        }
        None => {
            let url = format!("sqlite://{}", app.sqlite_path().display());
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            let done = sqlx::query(sql).bind(version).execute(&pool).await.unwrap();
            assert_eq!(done.rows_affected(), 1);
            pool.close().await;
        }
    }
}

/// A database written before addresses were canonical holds case variants
/// as separate accounts. The migration lowercases what it can, refuses no
/// start and deletes nobody.
async fn existing_case_variants_survive_the_email_migration(stack: Stack) {
    let app = spawn_app(stack).await;
    let at = |second: u32| Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, second).unwrap();
    let legacy = [
        ("Ada@example.com", at(1)),
        ("ADA@example.com", at(2)),
        ("Bob@example.com", at(3)),
        ("Carl@example.com", at(4)),
        ("carl@example.com", at(5)),
    ];
    let mut ids = Vec::new();
    for (email, created_at) in legacy {
        let id = uuid::Uuid::now_v7();
        insert_user_directly(&app, id, email, created_at).await;
        ids.push(id);
    }
    unapply_migration(&app, 2).await;

    let mut config = app.config.clone();
    let data = Arc::clone(&app.data);
    config.server.server_port = 0;
    app.stop().await.expect("clean shutdown");
    let app = spawn_app_with(config, data).await;

    let expected = [
        "ada@example.com",  // the oldest of its variants takes the canonical form
        "ADA@example.com",  // kept as it was, still an account
        "bob@example.com",  // alone: lowercased
        "Carl@example.com", // a lowercase variant already existed
        "carl@example.com",
    ];
    for (id, email) in ids.iter().zip(expected) {
        let path = format!("/api/v1/users/{id}");
        let user: Value = app.get(&path).await.json().await.unwrap();
        assert_eq!(user["email"], email);
        let response = app.put(&path, &json!({ "last_name": "Updated" })).await;
        assert_eq!(response.status(), 200, "{email} stays writable");
    }
    for taken in [
        "ada@example.com",
        "Ada@example.com",
        "BOB@example.com",
        "CARL@example.com",
    ] {
        let response = app.post("/api/v1/users", &user_body(taken)).await;
        assert_problem(response, 409, Some("email")).await;
    }
}
