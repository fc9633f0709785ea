//! `/api/v1/auth/*` (`AUTH_MODE=accounts`) and `/api/v1/api-keys`: the
//! Go service's latest paths, fields and status codes for logging in,
//! refreshing, logging out, one's profile, and API keys created by admins.
//! With another `AUTH_MODE` the `auth` paths answer 404; `api-keys` needs
//! an admin credential in any mode but `none`.

use std::net::SocketAddr;

use axum::Extension;
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::documented::{BadRequest, NotFound, NotJson, TooLarge, Unavailable};
use super::extract::ApiJson;
use super::{ApiError, AppState};
use crate::auth::accounts::{Accounts, Session};
use crate::auth::api_key::NewKey;
use crate::auth::{Principal, Scope, Scopes};
use crate::domain::ValidationError;

/// Longest name of an API key (the Go service's).
const MAX_KEY_NAME: usize = 50;

/// An email and a password.
#[derive(Deserialize, ToSchema)]
pub(super) struct LoginRequest {
    #[schema(example = "admin@example.com")]
    email: String,
    #[schema(example = "correct horse battery staple")]
    password: String,
}

/// A refresh token, from a login or the last refresh.
#[derive(Deserialize, ToSchema)]
pub(super) struct RefreshRequest {
    refresh_token: String,
}

/// Optionally, the refresh token whose family ends; without it, every
/// refresh token of the account does.
#[derive(Deserialize, ToSchema, Default)]
pub(super) struct LogoutRequest {
    #[serde(default)]
    refresh_token: Option<String>,
}

/// A logout's answer (the Go service's).
#[derive(Serialize, ToSchema)]
pub(super) struct LoggedOut {
    #[schema(example = "Logged out successfully")]
    message: &'static str,
}

/// Who the credential belongs to (the Go service's fields).
#[derive(Serialize, ToSchema)]
pub(super) struct Profile {
    /// The account's id (an API key's id for a key).
    user_id: String,
    email: Option<String>,
    /// `admin`, `user` or `readonly`; `null` for a credential with scopes
    /// and no role (an API key).
    role: Option<String>,
    /// What the credential may do.
    scopes: Vec<&'static str>,
}

/// A new API key.
#[derive(Deserialize, ToSchema)]
pub(super) struct CreateApiKey {
    /// 3–50 characters.
    #[schema(example = "billing-export", min_length = 3, max_length = 50)]
    name: String,
    /// Scopes: `read`, `write`, `admin`.
    #[schema(example = json!(["read"]))]
    permissions: Vec<String>,
    /// When the key stops working; never, when absent.
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

/// A created API key; `api_key` is shown this once.
#[derive(Serialize, ToSchema)]
pub(super) struct CreatedApiKey {
    id: Uuid,
    name: String,
    #[schema(example = "hlk_3q2-7wEXAMPLEkeyEXAMPLEkeyEXAMPLEkeyEXAMPLE")]
    api_key: String,
    permissions: Vec<&'static str>,
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

fn accounts(state: &AppState) -> Result<&Accounts, ApiError> {
    state.accounts.as_deref().ok_or(ApiError::RouteNotFound)
}

#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "auth", operation_id = "login",
    summary = "Log in with email and password (AUTH_MODE=accounts)",
    request_body(content = LoginRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "An access token and a refresh token", body = Session),
        BadRequest,
        (status = 401, description = "Wrong email or password, or an inactive account", body = super::error::Problem, content_type = "application/problem+json"),
        NotFound,
        (status = 429, description = "Too many failed logins for the account or from the client", body = super::error::Problem, content_type = "application/problem+json"),
        TooLarge,
        NotJson,
        Unavailable,
    )
)]
pub(super) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let accounts = accounts(&state)?;
    let client = state
        .guards
        .client_address(&headers, peer.map(|Extension(ConnectInfo(peer))| peer.ip()));
    let session = accounts.login(&body.email, &body.password, client).await?;
    Ok(Json(session).into_response())
}

#[utoipa::path(
    post, path = "/api/v1/auth/refresh", tag = "auth", operation_id = "refresh",
    summary = "Trade a refresh token for a new pair (AUTH_MODE=accounts)",
    request_body(content = RefreshRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A new access token and a new refresh token; the one sent is used up", body = Session),
        BadRequest,
        (status = 401, description = "Unknown, expired, revoked or used refresh token (a used one revokes its family)", body = super::error::Problem, content_type = "application/problem+json"),
        NotFound,
        TooLarge,
        NotJson,
        Unavailable,
    )
)]
pub(super) async fn refresh(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    let session = accounts(&state)?.refresh(&body.refresh_token).await?;
    Ok(Json(session).into_response())
}

#[utoipa::path(
    post, path = "/api/v1/auth/logout", tag = "auth", operation_id = "logout",
    summary = "End refresh tokens (AUTH_MODE=accounts); the access token lasts until it expires",
    request_body(content = Option<LogoutRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "The refresh token's family (or every refresh token of the account) is revoked", body = LoggedOut),
        BadRequest,
        (status = 401, description = "No valid access token, or a refresh token of another account", body = super::error::Problem, content_type = "application/problem+json"),
        NotFound,
        Unavailable,
    ),
    security(("bearer" = []))
)]
pub(super) async fn logout(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let accounts = accounts(&state)?;
    let Ok(account) = principal.subject.parse::<Uuid>() else {
        return Err(ApiError::CredentialInvalid(
            "this credential is not an account's",
        ));
    };
    if principal.role.is_none() {
        return Err(ApiError::CredentialInvalid(
            "this credential is not an account's",
        ));
    }
    // The Go service's logout takes no body; ours may name the token.
    let body: LogoutRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LogoutRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| ApiError::InvalidBody {
            field: None,
            detail: format!("not a logout request: {err}"),
        })?
    };
    accounts
        .logout(account, body.refresh_token.as_deref())
        .await?;
    Ok(Json(LoggedOut {
        message: "Logged out successfully",
    })
    .into_response())
}

#[utoipa::path(
    get, path = "/api/v1/auth/profile", tag = "auth", operation_id = "profile",
    summary = "Who the credential belongs to",
    responses(
        (status = 200, description = "The credential's account (or key) and role", body = Profile),
        (status = 401, description = "No valid credential", body = super::error::Problem, content_type = "application/problem+json"),
        NotFound,
    ),
    security(("bearer" = []))
)]
pub(super) async fn profile(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, ApiError> {
    accounts(&state)?;
    Ok(Json(Profile {
        user_id: principal.subject,
        email: principal.email,
        role: principal.role.map(|role| role.as_str().to_owned()),
        scopes: principal.scopes.iter().map(Scope::as_str).collect(),
    })
    .into_response())
}

#[utoipa::path(
    post, path = "/api/v1/api-keys", tag = "auth", operation_id = "create_api_key",
    summary = "Create an API key (admin)",
    request_body(content = CreateApiKey, content_type = "application/json"),
    responses(
        (status = 201, description = "The key, shown this once", body = CreatedApiKey),
        BadRequest,
        NotFound,
        TooLarge,
        NotJson,
        Unavailable,
    ),
    security(("bearer" = []))
)]
pub(super) async fn create_api_key(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> Result<Response, ApiError> {
    let name = body.name.trim();
    let length = name.chars().count();
    if !(3..=MAX_KEY_NAME).contains(&length) || name.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "name",
            format!("must be 3 to {MAX_KEY_NAME} characters, none of them control characters"),
        )
        .into());
    }
    if body.permissions.is_empty() {
        return Err(
            ValidationError::new("permissions", "name at least one of read, write, admin").into(),
        );
    }
    let scopes = body
        .permissions
        .iter()
        .map(|name| {
            Scope::parse(name).ok_or_else(|| {
                ValidationError::new(
                    "permissions",
                    format!("unknown permission {name:?}; use read, write or admin"),
                )
            })
        })
        .collect::<Result<Scopes, _>>()?;
    let now = Utc::now();
    if body.expires_at.is_some_and(|at| at <= now) {
        return Err(ValidationError::new("expires_at", "must be in the future").into());
    }
    let mut key = NewKey::generate(name, scopes).map_err(ApiError::Internal)?;
    key.record.expires_at = body.expires_at;
    state
        .keys
        .insert(&key)
        .await
        .map_err(ApiError::Unavailable)?;
    tracing::info!(key = %key.record.id, name, scopes = %scopes, "API key created over HTTP");
    let created = CreatedApiKey {
        id: key.record.id,
        name: key.record.name.clone(),
        api_key: key.secret.clone(),
        permissions: scopes.iter().map(Scope::as_str).collect(),
        expires_at: key.record.expires_at,
        created_at: key.record.created_at,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}
