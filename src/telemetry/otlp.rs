//! The span pipeline: an OpenTelemetry tracer provider whose batch
//! processor exports over OTLP/HTTP.
//!
//! The batch processor exports from a thread of its own. Its requests go
//! through [`ExportClient`], which sends them with `reqwest` (rustls, over
//! `http://` or `https://`) on the application's Tokio runtime.

use std::collections::HashMap;

use anyhow::Context;
use async_trait::async_trait;
use axum::http::{Request, Response};
use bytes::Bytes;
use opentelemetry::KeyValue;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler as SdkSampler, SdkTracerProvider};
use secrecy::ExposeSecret;
use tokio::runtime::Handle;

use crate::config::otel::{OtlpExport, Protocol, RootSampler, Sampler};

/// Builds the provider; its exporter sends on the current Tokio runtime.
pub(super) fn provider(export: &OtlpExport) -> anyhow::Result<SdkTracerProvider> {
    let runtime = Handle::try_current()
        .context("span export needs a Tokio runtime to send on (BUG: init outside one)")?;
    let headers: HashMap<String, String> = export
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), value.expose_secret().to_owned()))
        .collect();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(ExportClient {
            runtime,
            client: http_client(export)?,
        })
        .with_endpoint(export.endpoint.to_string())
        .with_protocol(match export.protocol {
            Protocol::HttpProtobuf => opentelemetry_otlp::Protocol::HttpBinary,
            Protocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
        })
        .with_timeout(export.timeout)
        .with_headers(headers)
        .build()
        .context("failed to set up the OTLP span exporter")?;
    let resource = Resource::builder_empty()
        .with_service_name(export.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attributes(
            export
                .resource_attributes
                .iter()
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler(export.sampler))
        .with_resource(resource)
        .build())
}

fn sampler(sampler: Sampler) -> SdkSampler {
    let root = |root: RootSampler| match root {
        RootSampler::AlwaysOn => SdkSampler::AlwaysOn,
        RootSampler::AlwaysOff => SdkSampler::AlwaysOff,
        RootSampler::TraceIdRatio(ratio) => SdkSampler::TraceIdRatioBased(ratio),
    };
    match sampler {
        Sampler::AlwaysOn => SdkSampler::AlwaysOn,
        Sampler::AlwaysOff => SdkSampler::AlwaysOff,
        Sampler::TraceIdRatio(ratio) => SdkSampler::TraceIdRatioBased(ratio),
        Sampler::ParentBased(inner) => SdkSampler::ParentBased(Box::new(root(inner))),
    }
}

/// The HTTP client of the exports: the system's CAs or
/// `OTEL_EXPORTER_OTLP_CERTIFICATE`'s, and the client certificate if any.
fn http_client(export: &OtlpExport) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(export.timeout)
        .connect_timeout(export.timeout);
    if let Some(pem) = &export.ca_certificates {
        builder = builder.tls_built_in_root_certs(false);
        for certificate in reqwest::Certificate::from_pem_bundle(pem)
            .context("OTEL_EXPORTER_OTLP_CERTIFICATE holds no usable certificate")?
        {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let Some(pem) = &export.client_identity {
        builder = builder.identity(
            reqwest::Identity::from_pem(pem.expose_secret().as_bytes()).context(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY \
                 are not a certificate and its key",
            )?,
        );
    }
    builder
        .build()
        .context("failed to set up the OTLP HTTP client")
}

/// Sends each export request with `client`, on `runtime`.
#[derive(Debug)]
struct ExportClient {
    runtime: Handle,
    client: reqwest::Client,
}

#[async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let sent = self
            .runtime
            .spawn(async move { send(&client, request).await })
            .await;
        let result = sent.map_err(HttpError::from).and_then(|result| result);
        if let Err(err) = &result {
            // Outside any span: this line is not recorded in a trace.
            tracing::warn!(error = %err, "failed to export spans");
        }
        result
    }
}

async fn send(
    client: &reqwest::Client,
    request: Request<Bytes>,
) -> Result<Response<Bytes>, HttpError> {
    let response = client
        .execute(reqwest::Request::try_from(request)?)
        .await
        .map_err(|err| format!("{:#}", anyhow::Error::new(err)))?;
    let mut answer = Response::builder().status(response.status());
    if let Some(headers) = answer.headers_mut() {
        headers.extend(response.headers().clone());
    }
    let body = response.bytes().await?;
    Ok(answer.body(body)?)
}
