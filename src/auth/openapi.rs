//! What the OpenAPI document says of authentication. The schemes are
//! always declared; they are enforced only when `AUTH_MODE` (or
//! `METRICS_TOKEN`, for `/metrics`) is set. Each API operation lists "no
//! credential" among its alternatives, as with `AUTH_MODE=none`, and the
//! scope it needs otherwise, with its 401 and 403 answers.

use utoipa::Modify;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, ResponseBuilder};

use axum::http::Method;

use super::Scope;

/// Adds the security schemes and each API operation's requirements.
pub struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "AUTH_MODE=jwt: a JWT whose `scope` (or `scp`) claim holds the scope, or \
                         whose `role` (admin, user, readonly) grants it; AUTH_MODE=accounts: an \
                         access token from /api/v1/auth/login, or an API key; AUTH_MODE=api-key: an \
                         API key. Not required with AUTH_MODE=none (the default).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "AUTH_MODE=api-key: a key made by `highload api-key create` holding the scope.",
            ))),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "METRICS_TOKEN, when it is set: GET /metrics requires it.",
                    ))
                    .build(),
            ),
        );
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    Content::new(Some(Ref::from_schema_name("Problem"))),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if path == "/metrics" {
                if let Some(operation) = item.get.as_mut() {
                    operation.security = Some(vec![
                        SecurityRequirement::default(),
                        SecurityRequirement::new("metrics_token", Vec::<String>::new()),
                    ]);
                    operation.responses.responses.insert(
                        "401".into(),
                        RefOr::T(problem("METRICS_TOKEN is set and the request lacks it")),
                    );
                }
                continue;
            }
            if !path.starts_with("/api/") && !path.starts_with("/admin/") {
                continue;
            }
            let needs = |method: Method| Scope::for_request(&method, path, false);
            let operations = [
                (needs(Method::GET), item.get.as_mut()),
                (needs(Method::POST), item.post.as_mut()),
                (needs(Method::PUT), item.put.as_mut()),
                (needs(Method::PATCH), item.patch.as_mut()),
                (needs(Method::DELETE), item.delete.as_mut()),
            ];
            for (scope, operation) in operations {
                let Some(operation) = operation else { continue };
                operation.security = Some(vec![
                    SecurityRequirement::default(),
                    SecurityRequirement::new("bearer", [scope.as_str()]),
                    SecurityRequirement::new("api_key", [scope.as_str()]),
                ]);
                let responses = &mut operation.responses.responses;
                responses.insert(
                    "401".into(),
                    RefOr::T(problem(
                        "Authentication is on and the credential is missing or not valid \
                         (WWW-Authenticate: Bearer)",
                    )),
                );
                responses.insert(
                    "403".into(),
                    RefOr::T(problem(&format!(
                        "The credential lacks the `{scope}` scope (or `admin`)"
                    ))),
                );
            }
        }
    }
}
