//! The authentication guard: asks [`Authenticator`] about each request and
//! turns its refusals into the API's one error type.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::Authenticator;
use crate::http::error::ApiError;

/// Middleware of the API's resources: refuses requests without a
/// credential that holds the route's scope.
pub(crate) async fn require_scope(
    State(auth): State<Arc<Authenticator>>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    match auth.authorize(req.headers(), req.method(), &path).await {
        Ok(principal) => {
            if let Some(principal) = principal {
                req.extensions_mut().insert(principal);
            }
            next.run(req).await
        }
        Err(err) => ApiError::from(err).into_response(),
    }
}

/// Middleware of the routes of one's own account (profile, logout): any
/// verified credential, whatever its scopes.
pub(crate) async fn require_principal(
    State(auth): State<Arc<Authenticator>>,
    mut req: Request,
    next: Next,
) -> Response {
    match auth.authenticate(req.headers()).await {
        Ok(Some(principal)) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Ok(None) => ApiError::from(crate::auth::AuthError::Missing).into_response(),
        Err(err) => ApiError::from(err).into_response(),
    }
}

/// Middleware of `/metrics`: requires `Authorization: Bearer
/// <METRICS_TOKEN>` when that is set.
pub(crate) async fn require_metrics_token(
    State(auth): State<Arc<Authenticator>>,
    req: Request,
    next: Next,
) -> Response {
    match auth.check_metrics_token(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(err) => ApiError::from(err).into_response(),
    }
}
