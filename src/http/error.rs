//! The one error type of the HTTP edge.
//!
//! Every error answers with `application/problem+json`: the `error` message
//! the Go service sent, plus the RFC 9457 fields (`type`, `title`, `status`,
//! `detail`) and, for validation errors, the offending `field`. 4xx bodies
//! tell the client what to fix; 5xx bodies say nothing internal, and the
//! cause chain is logged inside the request's span instead.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::accounts::AccountError;
use crate::auth::{AuthError, Scope};
use crate::domain::ValidationError;
use crate::edge::refusals::Reason;
use crate::service::ServiceError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("invalid request body: {detail}")]
    InvalidBody {
        field: Option<String>,
        detail: String,
    },
    #[error("invalid query parameter: {0}")]
    InvalidQuery(ValidationError),
    #[error("invalid {0} id")]
    InvalidId(&'static str),
    #[error("user not found")]
    UserNotFound,
    #[error("event not found")]
    EventNotFound,
    #[error("no route for this path")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("email already exists")]
    EmailTaken,
    #[error("invalid {header} header: {detail}")]
    InvalidHeader {
        header: &'static str,
        detail: String,
    },
    #[error("idempotency key in use by a request in progress")]
    IdempotencyKeyInFlight,
    #[error("idempotency key reused with another request")]
    IdempotencyKeyReused,
    #[error("rate limited")]
    RateLimited,
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("server overloaded")]
    Overloaded,
    #[error("request timed out")]
    Timeout,
    #[error("request body not received in time")]
    BodyTimeout(std::time::Duration),
    #[error("starting up")]
    NotReady,
    #[error("no credential")]
    CredentialMissing,
    #[error("invalid credential: {0}")]
    CredentialInvalid(&'static str),
    #[error("credential lacks the {0} scope")]
    Forbidden(Scope),
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("too many failed logins")]
    LoginThrottled(std::time::Duration),
    #[error("dependency unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        Self::InvalidBody {
            field: Some(err.field.to_owned()),
            detail: err.to_string(),
        }
    }
}

/// Authentication's refusals: 401 with a `WWW-Authenticate` challenge when
/// no credential or an invalid one came, 403 when it lacks the scope.
impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Missing => Self::CredentialMissing,
            AuthError::Invalid(reason) => Self::CredentialInvalid(reason),
            AuthError::Forbidden(scope) => Self::Forbidden(scope),
            AuthError::Unavailable(e) => Self::Unavailable(e),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::InvalidCredentials => Self::InvalidCredentials,
            AccountError::InvalidRefreshToken => Self::InvalidRefreshToken,
            AccountError::Throttled(wait) => Self::LoginThrottled(wait),
            AccountError::EmailTaken => Self::EmailTaken,
            AccountError::Invalid(err) => err.into(),
            AccountError::Unavailable(e) => Self::Unavailable(e),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::UserNotFound => Self::UserNotFound,
            ServiceError::EventNotFound => Self::EventNotFound,
            ServiceError::EmailTaken => Self::EmailTaken,
            ServiceError::IdempotencyKeyTaken => Self::IdempotencyKeyInFlight,
            ServiceError::Unavailable(e) => Self::Unavailable(e),
            ServiceError::Internal(e) => Self::Internal(e),
        }
    }
}

/// An error: RFC 9457 problem details, plus the `error` message the Go
/// service sent.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Problem<'a> {
    /// Short message, as the Go service sent it (equals `title`).
    #[schema(example = "Invalid request body")]
    error: &'a str,
    /// Problem type URI; README.md's "Errors" lists them.
    #[serde(rename = "type")]
    #[schema(example = "urn:highload:problem:invalid-body")]
    problem_type: &'static str,
    #[schema(example = "Invalid request body")]
    title: &'a str,
    /// The HTTP status.
    #[schema(example = 400)]
    status: u16,
    /// What is wrong, for this request.
    #[schema(example = "email: must be an email address like name@example.com")]
    detail: String,
    /// The request field or query parameter at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "email")]
    field: Option<&'a str>,
}

impl ApiError {
    /// Status, problem `type` (README.md's "Errors" lists them), and the
    /// short message (`error`, `title`).
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            Self::InvalidBody { .. } => (
                S::BAD_REQUEST,
                "urn:highload:problem:invalid-body",
                "Invalid request body",
            ),
            Self::InvalidQuery(_) => (
                S::BAD_REQUEST,
                "urn:highload:problem:invalid-query",
                "Invalid query parameter",
            ),
            Self::InvalidId("user") => (
                S::BAD_REQUEST,
                "urn:highload:problem:invalid-id",
                "Invalid user ID",
            ),
            Self::InvalidId(_) => (
                S::BAD_REQUEST,
                "urn:highload:problem:invalid-id",
                "Invalid event ID",
            ),
            Self::UserNotFound => (
                S::NOT_FOUND,
                "urn:highload:problem:not-found",
                "User not found",
            ),
            Self::EventNotFound => (
                S::NOT_FOUND,
                "urn:highload:problem:not-found",
                "Event not found",
            ),
            Self::RouteNotFound => (
                S::NOT_FOUND,
                "urn:highload:problem:not-found",
                "Route not found",
            ),
            Self::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "urn:highload:problem:method-not-allowed",
                "Method not allowed",
            ),
            Self::EmailTaken => (
                S::CONFLICT,
                "urn:highload:problem:conflict",
                "Email already exists",
            ),
            Self::InvalidHeader { .. } => (
                S::BAD_REQUEST,
                "urn:highload:problem:invalid-header",
                "Invalid header",
            ),
            Self::IdempotencyKeyInFlight => (
                S::CONFLICT,
                "urn:highload:problem:idempotency-key-in-use",
                "Idempotency key in use",
            ),
            Self::IdempotencyKeyReused => (
                S::UNPROCESSABLE_ENTITY,
                "urn:highload:problem:idempotency-key-reused",
                "Idempotency key reused",
            ),
            Self::RateLimited => (
                S::TOO_MANY_REQUESTS,
                "urn:highload:problem:rate-limited",
                "Too many requests",
            ),
            Self::PayloadTooLarge { .. } => (
                S::PAYLOAD_TOO_LARGE,
                "urn:highload:problem:payload-too-large",
                "Request body too large",
            ),
            Self::UnsupportedMediaType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "urn:highload:problem:unsupported-media-type",
                "Unsupported media type",
            ),
            Self::Overloaded => (
                S::SERVICE_UNAVAILABLE,
                "urn:highload:problem:overloaded",
                "Service overloaded",
            ),
            Self::NotReady => (
                S::SERVICE_UNAVAILABLE,
                "urn:highload:problem:unavailable",
                "Service unavailable",
            ),
            Self::Timeout => (
                S::SERVICE_UNAVAILABLE,
                "urn:highload:problem:timeout",
                "Request timed out",
            ),
            Self::BodyTimeout(_) => (
                S::REQUEST_TIMEOUT,
                "urn:highload:problem:body-timeout",
                "Request body too slow",
            ),
            Self::CredentialMissing | Self::CredentialInvalid(_) => (
                S::UNAUTHORIZED,
                "urn:highload:problem:unauthorized",
                "Unauthorized",
            ),
            Self::Forbidden(_) => (S::FORBIDDEN, "urn:highload:problem:forbidden", "Forbidden"),
            Self::InvalidCredentials => (
                S::UNAUTHORIZED,
                "urn:highload:problem:invalid-credentials",
                "Invalid credentials",
            ),
            Self::InvalidRefreshToken => (
                S::UNAUTHORIZED,
                "urn:highload:problem:invalid-refresh-token",
                "Invalid refresh token",
            ),
            Self::LoginThrottled(_) => (
                S::TOO_MANY_REQUESTS,
                "urn:highload:problem:login-throttled",
                "Too many failed logins",
            ),
            Self::Unavailable(_) => (
                S::SERVICE_UNAVAILABLE,
                "urn:highload:problem:unavailable",
                "Service unavailable",
            ),
            Self::Internal(_) => (
                S::INTERNAL_SERVER_ERROR,
                "urn:highload:problem:internal",
                "Internal server error",
            ),
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::InvalidBody { detail, .. } => detail.clone(),
            Self::InvalidQuery(err) => err.to_string(),
            Self::InvalidId(what) => format!("the {what} id in the path is not a UUID"),
            Self::UserNotFound => "no user has this id".into(),
            Self::EventNotFound => "no event has this id".into(),
            Self::RouteNotFound => "no endpoint at this path; see the API in README.md".into(),
            Self::MethodNotAllowed => "this path does not accept this method".into(),
            Self::EmailTaken => "email: another user already has this address".into(),
            Self::InvalidHeader { header, detail } => format!("{header}: {detail}"),
            Self::IdempotencyKeyInFlight => "a request with this Idempotency-Key is in progress; \
                retry when it has finished to receive its response"
                .into(),
            Self::IdempotencyKeyReused => "this Idempotency-Key came with another request \
                (method, path or body); send a new key for a new request"
                .into(),
            Self::RateLimited => {
                "too many requests from this client; retry after Retry-After seconds".into()
            }
            Self::PayloadTooLarge { limit } => {
                format!("the request body exceeds the limit of {limit} bytes")
            }
            Self::UnsupportedMediaType => {
                "send the body as JSON in UTF-8 with Content-Type: application/json".into()
            }
            Self::Overloaded => "too many requests in progress; retry shortly".into(),
            Self::Timeout => "the request took too long; retry shortly".into(),
            Self::BodyTimeout(limit) => format!(
                "the request body did not arrive within {} s of its head",
                limit.as_secs_f64()
            ),
            Self::NotReady => "the database is not ready yet; retry shortly".into(),
            Self::CredentialMissing => {
                "send a credential in Authorization: Bearer (or X-API-Key)".into()
            }
            Self::CredentialInvalid(reason) => (*reason).into(),
            Self::Forbidden(scope) => format!("this credential lacks the {scope} scope"),
            Self::InvalidCredentials => "the email or the password is wrong, or the account \
                is inactive"
                .into(),
            Self::InvalidRefreshToken => "the refresh token is unknown, expired, revoked or \
                used already; log in again"
                .into(),
            Self::LoginThrottled(wait) => format!(
                "too many failed logins for this account or from this client; retry in {} s",
                wait.as_secs()
            ),
            Self::Unavailable(_) => "a backing service is unavailable; retry shortly".into(),
            Self::Internal(_) => "the server failed to handle this request".into(),
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            Self::InvalidBody { field, .. } => field.as_deref(),
            Self::InvalidQuery(err) => Some(err.field),
            Self::EmailTaken => Some("email"),
            Self::InvalidHeader { header, .. } => Some(*header),
            Self::IdempotencyKeyInFlight | Self::IdempotencyKeyReused => Some("Idempotency-Key"),
            _ => None,
        }
    }
}

impl ApiError {
    /// Which refusal of the guards this is, for the admin views; `None`
    /// for answers that refuse nothing of the client's (404, 409, 5xx).
    fn refusal(&self) -> Option<Reason> {
        Some(match self {
            Self::Overloaded | Self::Timeout => Reason::Shed,
            Self::RateLimited | Self::LoginThrottled(_) => Reason::RateLimited,
            Self::CredentialMissing
            | Self::CredentialInvalid(_)
            | Self::InvalidCredentials
            | Self::InvalidRefreshToken => Reason::Unauthenticated,
            Self::Forbidden(_) => Reason::Forbidden,
            Self::InvalidBody { .. }
            | Self::InvalidQuery(_)
            | Self::InvalidId(_)
            | Self::InvalidHeader { .. }
            | Self::PayloadTooLarge { .. }
            | Self::BodyTimeout(_)
            | Self::UnsupportedMediaType
            | Self::IdempotencyKeyReused => Reason::BadInput,
            _ => return None,
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, problem_type, title) = self.parts();
        match &self {
            Self::Internal(err) => tracing::error!(error = format!("{err:#}"), "request failed"),
            Self::Unavailable(err) => {
                tracing::warn!(error = format!("{err:#}"), "dependency unavailable");
            }
            _ => {}
        }
        let problem = Problem {
            error: title,
            problem_type,
            title,
            status: status.as_u16(),
            detail: self.detail(),
            field: self.field(),
        };
        let body = serde_json::to_vec(&problem).expect("BUG: a problem serializes");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::LoginThrottled(wait) = &self {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
        }
        if let Self::BodyTimeout(_) = &self {
            // The rest of the body may still come: it is no next request.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(challenge) = self.challenge() {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(reason) = self.refusal() {
            response.extensions_mut().insert(reason);
        }
        response
    }
}

impl ApiError {
    /// The `WWW-Authenticate` header of a refused credential (RFC 6750).
    fn challenge(&self) -> Option<HeaderValue> {
        match self {
            Self::CredentialMissing => Some(HeaderValue::from_static(r#"Bearer realm="highload""#)),
            Self::CredentialInvalid(_) => Some(HeaderValue::from_static(
                r#"Bearer realm="highload", error="invalid_token""#,
            )),
            Self::Forbidden(scope) => HeaderValue::from_str(&format!(
                r#"Bearer realm="highload", error="insufficient_scope", scope="{scope}""#
            ))
            .ok(),
            _ => None,
        }
    }
}

/// The error responses as the OpenAPI document lists them, shared by the
/// operations (each names the ones it can answer).
pub(super) mod documented {
    #![allow(dead_code)] // only read by the OpenAPI derive

    use crate::http::error::Problem;

    /// Malformed JSON, or an invalid field or parameter (named in `field`)
    #[derive(utoipa::IntoResponses)]
    #[response(status = 400, content_type = "application/problem+json")]
    pub(crate) struct BadRequest(Problem<'static>);

    /// No such user, event or route
    #[derive(utoipa::IntoResponses)]
    #[response(status = 404, content_type = "application/problem+json")]
    pub(crate) struct NotFound(Problem<'static>);

    /// Another user has this email
    #[derive(utoipa::IntoResponses)]
    #[response(status = 409, content_type = "application/problem+json")]
    pub(crate) struct Conflict(Problem<'static>);

    /// The body is larger than HTTP_BODY_LIMIT
    #[derive(utoipa::IntoResponses)]
    #[response(status = 413, content_type = "application/problem+json")]
    pub(crate) struct TooLarge(Problem<'static>);

    /// The body is not sent as application/json
    #[derive(utoipa::IntoResponses)]
    #[response(status = 415, content_type = "application/problem+json")]
    pub(crate) struct NotJson(Problem<'static>);

    /// Overloaded, timed out, or the database unavailable (see Retry-After)
    #[derive(utoipa::IntoResponses)]
    #[response(status = 503, content_type = "application/problem+json")]
    pub(crate) struct Unavailable(Problem<'static>);
}
