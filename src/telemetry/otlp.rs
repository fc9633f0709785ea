//! The span pipeline: an OpenTelemetry tracer provider whose batch
//! processor exports over OTLP/HTTP.
//!
//! The batch processor exports from a thread of its own. Its requests go
//! through [`ExportClient`], a one-request-per-connection HTTP/1.1 client
//! that runs on the application's Tokio runtime: a batch leaves every few
//! seconds, so a connection pool, HTTP/2 or a second runtime would cost
//! more than they save.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use axum::http::{HeaderValue, Request, Response, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry::KeyValue;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler as SdkSampler, SdkTracerProvider};
use secrecy::ExposeSecret;
use tokio::net::TcpStream;
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
            timeout: export.timeout,
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

/// Sends each export request on a connection of its own, on `runtime`.
#[derive(Debug)]
struct ExportClient {
    runtime: Handle,
    /// Time limit of one request, connecting included.
    timeout: Duration,
}

#[async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let timeout = self.timeout;
        let sent = self
            .runtime
            .spawn(async move {
                match tokio::time::timeout(timeout, send(request)).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer within {timeout:?}").into()),
                }
            })
            .await;
        let result = sent.map_err(HttpError::from).and_then(|result| result);
        if let Err(err) = &result {
            // Outside any span: this line is not recorded in a trace.
            tracing::warn!(error = %err, "failed to export spans");
        }
        result
    }
}

async fn send(request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
    let (mut parts, body) = request.into_parts();
    let authority = parts
        .uri
        .authority()
        .ok_or("the export URL names no host")?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((authority.host(), port)).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    parts
        .headers
        .insert(header::HOST, HeaderValue::from_str(authority.as_str())?);
    // HTTP/1.1 sends the path only; the host went into `Host`.
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |p| Uri::from(p.clone()));
    let response = sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    drop(sender);
    connection.abort();
    Ok(Response::from_parts(parts, body))
}
