//! Extractors that reject bad input with an [`ApiError`] naming the problem,
//! instead of axum's plain-text rejections (and its 422 for wrong types).

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::{StatusCode, header, request::Parts};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::domain::ValidationError;

/// A JSON request body: `Content-Type: application/json` (or `+json`), at
/// most the configured size, a JSON object of the expected shape.
pub(super) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
                    limit: state.body_limit,
                },
                _ => ApiError::InvalidBody {
                    field: None,
                    detail: rejection.body_text(),
                },
            }
        })?;
        parse_json(&body).map(ApiJson)
    }
}

/// Whether the body is declared JSON: `application/json` or
/// `application/*+json`, with no charset or UTF-8 (RFC 8259: JSON
/// exchanged between systems is UTF-8; a body declared in another charset
/// would be misread).
fn is_json(content_type: Option<&axum::http::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let utf8 = parts.all(|parameter| match parameter.split_once('=') {
        Some((name, charset)) if name.trim().eq_ignore_ascii_case("charset") => {
            let charset = charset.trim().trim_matches('"');
            charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    });
    utf8 && (essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json")))
}

/// Parses a JSON object, naming the field at fault when it is not one of
/// the expected shape.
pub(super) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let invalid = |field: Option<String>, detail: String| ApiError::InvalidBody { field, detail };
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(invalid(
                None,
                "the body is empty; expected a JSON object".into(),
            ));
        }
        Some(b'{') => {}
        Some(_) => return Err(invalid(None, "expected a JSON object".into())),
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let inner = err.inner().to_string();
        let field = match err.path().to_string() {
            // "?" marks a syntax error at a position that is no field.
            path if path != "." && !path.contains('?') => Some(path),
            // Missing fields are reported at the parent: "missing field `email`".
            _ => inner
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
                .map(str::to_owned),
        };
        let detail = match &field {
            Some(field) if !inner.starts_with("missing field") => format!("{field}: {inner}"),
            _ => inner,
        };
        invalid(field, detail)
    })?;
    deserializer.end().map_err(|err| {
        invalid(
            None,
            format!("unexpected data after the JSON object: {err}"),
        )
    })?;
    Ok(value)
}

/// Query parameters; malformed encoding is a 400 naming the query.
pub(super) struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::try_from_uri(&parts.uri)
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| {
                ApiError::InvalidQuery(ValidationError::new("query", rejection.body_text()))
            })
    }
}

/// The `{id}` of a user path; not a UUID (or not even UTF-8) is a 400.
pub(super) struct UserId(pub Uuid);

/// The `{id}` of an event path.
pub(super) struct EventId(pub Uuid);

async fn path_id<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    kind: &'static str,
) -> Result<Uuid, ApiError> {
    let Path(raw) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::InvalidId(kind))?;
    Uuid::parse_str(&raw).map_err(|_| ApiError::InvalidId(kind))
}

impl<S: Send + Sync> FromRequestParts<S> for UserId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        path_id(parts, state, "user").await.map(Self)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for EventId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        path_id(parts, state, "event").await.map(Self)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        email: String,
        age: Option<u8>,
    }

    fn field_of(body: &str) -> Option<String> {
        match parse_json::<Body>(body.as_bytes()) {
            Err(ApiError::InvalidBody { field, .. }) => field,
            other => panic!("expected InvalidBody, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field_at_fault() {
        assert_eq!(field_of(r#"{"email": 5}"#).as_deref(), Some("email"));
        assert_eq!(field_of(r#"{"age": 1}"#).as_deref(), Some("email"));
        assert_eq!(
            field_of(r#"{"email": "a", "age": 300}"#).as_deref(),
            Some("age")
        );
        assert_eq!(field_of(r#"{"email": "a""#), None);
        assert_eq!(field_of(r#"["a"]"#), None);
        assert_eq!(field_of(""), None);
        assert_eq!(field_of(r#"{"email": "a"} x"#), None);
    }

    #[test]
    fn json_content_types_are_recognized() {
        let is = |v: &'static str| is_json(Some(&axum::http::HeaderValue::from_static(v)));
        assert!(is("application/json"));
        assert!(is("Application/JSON; charset=utf-8"));
        assert!(is("application/merge-patch+json"));
        assert!(is("application/json; charset=\"UTF-8\""));
        assert!(!is("application/json; charset=utf-16"));
        assert!(!is("application/json;charset=ISO-8859-1"));
        assert!(!is("text/plain"));
        assert!(!is("application/x-www-form-urlencoded"));
        assert!(!is_json(None));
    }
}
