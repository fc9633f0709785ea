//! `/api/v1/users`: create, read, update, delete, list, and activity.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiQuery, parse_id};
use super::{ApiError, AppState, PageQuery, json_body};
use crate::domain::{Email, NewUser, PersonName, User, UserPatch};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users", get(list).post(create))
        .route("/api/v1/users/{id}", get(read).put(update).delete(remove))
        .route("/api/v1/users/{id}/activity", get(activity))
}

#[derive(Deserialize)]
struct CreateUser {
    email: String,
    first_name: String,
    last_name: String,
}

/// Every field optional; `null` counts as absent.
#[derive(Deserialize)]
struct UpdateUser {
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

#[derive(Serialize)]
struct UserList<'a> {
    users: &'a [User],
    total: u64,
    page: u32,
    limit: u32,
}

async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<Response, ApiError> {
    let new = NewUser {
        email: Email::parse("email", &body.email)?,
        first_name: PersonName::parse("first_name", &body.first_name)?,
        last_name: PersonName::parse("last_name", &body.last_name)?,
    };
    let json = state.service.create_user(new).await?;
    Ok(json_body(StatusCode::CREATED, json))
}

async fn read(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let json = state.service.get_user(parse_id(&id, "user")?).await?;
    Ok(json_body(StatusCode::OK, json))
}

async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "user")?;
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

async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.service.delete_user(parse_id(&id, "user")?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    let page = query.page()?;
    let users = state.service.list_users(page).await?;
    Ok(axum::Json(UserList {
        users: &users.items,
        total: users.total,
        page: page.page,
        limit: page.limit,
    })
    .into_response())
}

async fn activity(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let activity = state.service.activity(parse_id(&id, "user")?).await?;
    Ok(axum::Json(activity).into_response())
}
