//! Request bodies are received in full before a request asks for
//! admission: a body that trickles in holds no slot of the API's
//! concurrency limit, only its connection. A body must arrive within
//! `HTTP_BODY_READ_TIMEOUT` of its head, else the request is answered 408
//! and its connection closed; one over the body limit is 413 as soon as
//! it passes it.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::http::error::ApiError;

/// How bodies are received.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// The largest body, in bytes.
    pub(crate) max_bytes: usize,
    /// The longest a body may take to arrive, from the end of its head.
    pub(crate) read_timeout: Duration,
}

/// The request with its body (if it has one) received in full, or the
/// answer that refuses it.
pub(super) async fn receive(limits: &BodyLimits, req: Request) -> Result<Request, Response> {
    if req.body().is_end_stream() {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let received = tokio::time::timeout(
        limits.read_timeout,
        Limited::new(body, limits.max_bytes).collect(),
    )
    .await;
    match received {
        Ok(Ok(collected)) => Ok(Request::from_parts(parts, Body::from(collected.to_bytes()))),
        Ok(Err(err)) if err.is::<LengthLimitError>() => Err(ApiError::PayloadTooLarge {
            limit: limits.max_bytes,
        }
        .into_response()),
        // The client broke off (or sent a malformed chunked body): it
        // reads no answer, or gets this one.
        Ok(Err(err)) => Err(ApiError::InvalidBody {
            field: None,
            detail: format!("the request body could not be read: {err}"),
        }
        .into_response()),
        Err(_) => {
            tracing::debug!(path = parts.uri.path(), "request body not received in time");
            Err(ApiError::BodyTimeout(limits.read_timeout).into_response())
        }
    }
}
