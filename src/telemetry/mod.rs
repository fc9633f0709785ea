//! Logging and tracing: a `tracing` subscriber filtered by `LOG_LEVEL`,
//! printing human-readable lines or one JSON object per line
//! (`LOG_FORMAT`); and, when an OTLP endpoint is configured (`OTEL_*`, see
//! `TracingConfig`), the service's spans exported as OpenTelemetry traces.
//!
//! `LOG_LEVEL` chooses what is logged and what is exported alike: with the
//! default (`info`) every span of the service is exported. One filter for
//! both, not one per layer: with a filter per layer, the relay's publish
//! spans on the PostgreSQL and Kafka stack reached the log but not the
//! exporter (the per-layer filter's state seen when a span is created was
//! not the one computed for it), so traces lost their publish step. A JSON
//! log line written inside a traced span
//! starts with its `trace_id` and `span_id`; with export off, a line inside
//! a span that continues an incoming trace context (see
//! `trace_context`) carries that context's `trace_id`.
//!
//! The exporter sends batches from a thread of its own; `Tracing::shutdown`
//! sends what is left, last in the application's drain.

mod json;
mod otlp;
pub(crate) mod trace_context;

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::config::log::{LogConfig, LogFormat};
pub use crate::config::otel::TracingConfig;

/// The process's span pipeline; without export, nothing.
#[derive(Default)]
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Whether spans are exported.
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter, waiting
    /// at most `timeout`.
    pub async fn shutdown(self, timeout: Duration) {
        let Some(provider) = self.provider else {
            return;
        };
        // Blocks until the exporter thread has sent its last batch, which
        // it does on this runtime.
        let stopped =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout)).await;
        match stopped {
            Ok(Ok(())) => tracing::info!("spans exported"),
            Ok(Err(err)) => tracing::warn!(error = %err, "the last spans were not exported"),
            Err(err) => tracing::warn!(error = %err, "the last spans were not exported"),
        }
    }
}

/// Installs the global subscriber; fails if one is installed already. With
/// export on, call it inside the Tokio runtime the application runs on:
/// the exporter sends on it.
pub fn init(log: &LogConfig, spans: &TracingConfig) -> anyhow::Result<Tracing> {
    let filter = EnvFilter::try_new(&log.log_level)?;
    let Some(export) = &spans.export else {
        tracing_subscriber::registry()
            .with(filter)
            .with(log_layer(log.log_format))
            .try_init()?;
        return Ok(Tracing::default());
    };
    let provider = otlp::provider(export)?;
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("highload"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false);
    tracing_subscriber::registry()
        .with(filter)
        .with(log_layer(log.log_format))
        .with(spans)
        .try_init()?;
    tracing::info!(
        endpoint = %export.endpoint,
        protocol = ?export.protocol,
        service_name = %export.service_name,
        "exporting spans"
    );
    Ok(Tracing {
        provider: Some(provider),
    })
}

/// The layer that prints log lines.
fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a> + 'static,
{
    match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .map_event_format(json::WithTraceIds)
            .boxed(),
        LogFormat::Pretty => fmt::layer()
            .with_target(false)
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
    }
}
