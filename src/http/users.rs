//! `/api/v1/users`: create, read, update, delete, list, and activity.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

use super::error::documented::{BadRequest, Conflict, NotFound, NotJson, TooLarge, Unavailable};
use super::extract::{ApiJson, ApiQuery, UserId};
use super::{ApiError, AppState, PageQuery, json_body};
use crate::domain::{Activity, Email, NewUser, PersonName, User, UserPatch, name_pattern};
use crate::edge::idempotency::Idempotent;

/// The name cursors of the user list are bound to.
const USERS_LIST: &str = "users";

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users", get(list).post(create))
        .route("/api/v1/users/{id}", get(read).put(update).delete(remove))
        .route("/api/v1/users/{id}/activity", get(activity))
}

/// A new user.
#[derive(Deserialize, ToSchema)]
pub(super) struct CreateUser {
    /// A valid address, at most 255 characters, without invisible
    /// characters; unique. Stored in one canonical form: trimmed,
    /// lowercased, the domain as punycode (`Ada@Bücher.de` is
    /// `ada@xn--bcher-kva.de`); a case or domain spelling of a taken address
    /// is taken too.
    #[schema(example = "ada@example.com", format = Email, max_length = 255)]
    email: String,
    #[schema(schema_with = first_name_schema)]
    first_name: String,
    #[schema(schema_with = last_name_schema)]
    last_name: String,
}

/// The fields to change; absent or `null` fields stay as they are, others
/// follow the rules of a new user.
#[derive(Deserialize, ToSchema)]
pub(super) struct UpdateUser {
    #[schema(example = "augusta@example.com", format = Email, max_length = 255)]
    email: Option<String>,
    #[schema(schema_with = optional_name_schema)]
    first_name: Option<String>,
    #[schema(schema_with = optional_name_schema)]
    last_name: Option<String>,
}

/// What [`PersonName`] accepts, as far as a schema can say it: the pattern
/// requires a visible character and refuses control and invisible ones;
/// `maxLength` counts what is sent, while the server counts after trimming.
fn name_schema(schema_type: impl Into<SchemaType>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(schema_type)
        .description(Some(
            "1–100 characters after trimming, at least one of them visible; no control \
             characters, and no invisible ones (zero-width space, byte-order mark, Hangul \
             filler, …) except a zero-width joiner or non-joiner between two visible \
             characters",
        ))
        .min_length(Some(1))
        .max_length(Some(100))
        .pattern(Some(name_pattern()))
}

fn first_name_schema() -> Object {
    name_schema(Type::String).examples(["Ada"]).build()
}

fn last_name_schema() -> Object {
    name_schema(Type::String).examples(["Lovelace"]).build()
}

fn optional_name_schema() -> Object {
    name_schema(SchemaType::from_iter([Type::String, Type::Null])).build()
}

/// One page of users, newest first.
#[derive(Serialize, ToSchema)]
pub(super) struct UserList<'a> {
    users: &'a [User],
    /// Users in all pages.
    total: u64,
    /// The page number asked for; 1 for a page that started at a cursor.
    page: u32,
    limit: u32,
    /// Pass as `cursor` to get the page after this one; `null` on the last
    /// page.
    #[schema(example = "0100063f6e9c5b2a8c0197a1c3e27a7c3a9b8d1e2f3a4b5c6d7e8f90a1b2c3d4e5")]
    next_cursor: Option<String>,
}

#[utoipa::path(
    post, path = "/api/v1/users", tag = "users", operation_id = "create_user", summary = "Create a user",
    request_body(content = CreateUser, content_type = "application/json"),
    responses(
        (status = 201, description = "The created user", body = User),
        BadRequest,
        Conflict,
        TooLarge,
        NotJson,
        Unavailable,
    )
)]
pub(super) async fn create(
    State(state): State<AppState>,
    Idempotent(key): Idempotent,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<Response, ApiError> {
    let new = NewUser {
        email: Email::parse("email", &body.email)?,
        first_name: PersonName::parse("first_name", &body.first_name)?,
        last_name: PersonName::parse("last_name", &body.last_name)?,
    };
    let json = state.service.create_user(new, key).await?;
    Ok(json_body(StatusCode::CREATED, json))
}

#[utoipa::path(
    get, path = "/api/v1/users/{id}", tag = "users", operation_id = "get_user", summary = "Get a user",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "The user", body = User),
        BadRequest,
        NotFound,
        Unavailable,
    )
)]
pub(super) async fn read(
    State(state): State<AppState>,
    UserId(id): UserId,
) -> Result<Response, ApiError> {
    let json = state.service.get_user(id).await?;
    Ok(json_body(StatusCode::OK, json))
}

#[utoipa::path(
    put, path = "/api/v1/users/{id}", tag = "users", operation_id = "update_user", summary = "Update some of a user's fields",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    request_body(content = UpdateUser, content_type = "application/json"),
    responses(
        (status = 200, description = "The updated user", body = User),
        BadRequest,
        NotFound,
        Conflict,
        TooLarge,
        NotJson,
        Unavailable,
    )
)]
pub(super) async fn update(
    State(state): State<AppState>,
    UserId(id): UserId,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<Response, ApiError> {
    let patch = UserPatch {
        email: body.email.map(|e| Email::parse("email", &e)).transpose()?,
        first_name: body
            .first_name
            .map(|n| PersonName::parse("first_name", &n))
            .transpose()?,
        last_name: body
            .last_name
            .map(|n| PersonName::parse("last_name", &n))
            .transpose()?,
    };
    let json = state.service.update_user(id, patch).await?;
    Ok(json_body(StatusCode::OK, json))
}

#[utoipa::path(
    delete, path = "/api/v1/users/{id}", tag = "users", operation_id = "delete_user", summary = "Delete a user and their events",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    responses(
        (status = 204, description = "Deleted, with the user's events"),
        BadRequest,
        NotFound,
        Unavailable,
    )
)]
pub(super) async fn remove(
    State(state): State<AppState>,
    UserId(id): UserId,
) -> Result<Response, ApiError> {
    state.service.delete_user(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(
    get, path = "/api/v1/users", tag = "users", operation_id = "list_users", summary = "List users, newest first",
    params(
        ("page" = Option<u32>, Query, minimum = 1, maximum = 2147483647, description = "Page number (default 1); not with `cursor`"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Users per page (default 10)"),
        ("cursor" = Option<String>, Query, pattern = "^[0-9a-f]{66}$", description = "Start after the page that returned this `next_cursor` (a keyset seek: deep pages cost what the first does, and users created meanwhile are neither repeated nor skipped among older ones). Opaque; a changed cursor, or one combined with `page`, is a 400"),
    ),
    responses(
        (status = 200, description = "One page of users, newest first", body = UserList),
        BadRequest,
        Unavailable,
    )
)]
pub(super) async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    let key = state.service.cursor_key().await?;
    let page = query.page(USERS_LIST, key)?;
    let users = state.service.list_users(page).await?;
    Ok(axum::Json(UserList {
        users: &users.items,
        total: users.total,
        page: page.number(),
        limit: page.limit,
        next_cursor: users.next.map(|next| next.to_cursor(USERS_LIST, key)),
    })
    .into_response())
}

#[utoipa::path(
    get, path = "/api/v1/users/{id}/activity", tag = "users", operation_id = "get_user_activity", summary = "Get what the workers derived from a user's events",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "What the workers derived from the user's events", body = Activity),
        BadRequest,
        NotFound,
        Unavailable,
    )
)]
pub(super) async fn activity(
    State(state): State<AppState>,
    UserId(id): UserId,
) -> Result<Response, ApiError> {
    let activity = state.service.activity(id).await?;
    Ok(axum::Json(activity).into_response())
}
