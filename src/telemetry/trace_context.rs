//! W3C trace context (`traceparent`, `tracestate`): carried from the HTTP
//! request that made a change, with its outbox row and as headers of its
//! bus message, to the worker that processes it, so that one trace runs
//! from the POST to the activity update.
//!
//! With span export on (see `telemetry`), spans are OpenTelemetry spans: the
//! context of a span names the span itself within its trace, and continuing
//! a context makes it the span's parent. With export off nothing is
//! recorded, but a context that came in (a request's `traceparent`, a
//! message's headers) is still passed on unchanged and its trace id logged:
//! the span that continues it keeps it in its extensions, where its child
//! spans find it.
//!
//! Contexts come from clients and other services: one that does not parse
//! is ignored (a new trace starts), never an error.

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::{OpenTelemetrySpanExt, SetParentError};
use tracing_subscriber::Registry;
use tracing_subscriber::registry::LookupSpan;

/// The header (HTTP and Kafka) that names the parent span.
pub(crate) const TRACEPARENT: &str = "traceparent";
/// The header with vendor-specific trace data, passed on as received.
pub(crate) const TRACESTATE: &str = "tracestate";

/// The longest `tracestate` passed on, in bytes; a longer one is dropped
/// (W3C lets a vendor truncate past 512).
const MAX_TRACESTATE_LEN: usize = 512;

/// A valid W3C trace context, in its header form: what a span passes to
/// the work it causes elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceContext {
    /// `00-<trace id>-<parent span id>-<flags>`, lowercase hex.
    traceparent: String,
    tracestate: Option<String>,
}

impl TraceContext {
    /// Parses header values; `None` unless `traceparent` is a valid W3C
    /// `traceparent` (a `tracestate` that is not valid is dropped).
    pub(crate) fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        // W3C's shape, checked here: the propagator pads a short id.
        if !well_formed(traceparent) {
            return None;
        }
        let tracestate = tracestate.filter(|s| s.len() <= MAX_TRACESTATE_LEN);
        let headers = Headers {
            traceparent: Some(traceparent),
            tracestate,
        };
        Self::of(extract(&headers).span().span_context())
    }

    /// The context naming `span` as the parent; `None` when it is invalid.
    pub(crate) fn of(span: &SpanContext) -> Option<Self> {
        if !span.is_valid() {
            return None;
        }
        let context = opentelemetry::Context::new().with_remote_span_context(span.clone());
        let mut headers = Owned::default();
        TraceContextPropagator::new().inject_context(&context, &mut headers);
        Some(Self {
            traceparent: headers.traceparent?,
            tracestate: headers.tracestate.filter(|s| !s.is_empty()),
        })
    }

    /// The context of an HTTP request's `traceparent` and `tracestate`.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let traceparent = headers.get(TRACEPARENT)?.to_str().ok()?;
        let tracestate = headers.get(TRACESTATE).and_then(|v| v.to_str().ok());
        Self::parse(traceparent, tracestate)
    }

    pub(crate) fn traceparent(&self) -> &str {
        &self.traceparent
    }

    pub(crate) fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    pub(crate) fn trace_id(&self) -> TraceId {
        self.span_context().trace_id()
    }

    /// The remote span this context names.
    pub(crate) fn span_context(&self) -> SpanContext {
        let headers = Headers {
            traceparent: Some(&self.traceparent),
            tracestate: self.tracestate.as_deref(),
        };
        extract(&headers).span().span_context().clone()
    }
}

/// The context the headers name. Extracted into an empty context: on one
/// that is not valid, the propagator returns the context it was given,
/// which must not be the current span's.
fn extract(headers: &Headers<'_>) -> opentelemetry::Context {
    TraceContextPropagator::new().extract_with_context(&opentelemetry::Context::new(), headers)
}

/// A context a span continues while spans are not exported: kept in the
/// span's extensions, for its logs and to pass on.
#[derive(Debug, Clone)]
pub(crate) struct Continued(pub(crate) TraceContext);

/// Makes `span` continue `context`: with export on, `context` becomes its
/// parent (call this before the span is first entered); with export off,
/// the span carries it along for its logs and the work it causes.
pub(crate) fn continue_trace(span: &Span, context: &TraceContext) {
    let parent = opentelemetry::Context::new().with_remote_span_context(context.span_context());
    match span.set_parent(parent) {
        Err(SetParentError::LayerNotFound) => {}
        Ok(()) | Err(_) => return,
    }
    span.with_subscriber(|(id, dispatch)| {
        let span = dispatch.downcast_ref::<Registry>()?.span(id)?;
        span.extensions_mut().replace(Continued(context.clone()));
        Some(())
    });
}

/// Makes `span` continue the trace of an HTTP request's `traceparent` (and
/// `tracestate`); without a valid one, the span starts a new trace (when
/// spans are exported).
pub(crate) fn continue_from_headers(span: &Span, headers: &HeaderMap) {
    if let Some(context) = TraceContext::from_headers(headers) {
        continue_trace(span, &context);
    }
}

/// The context to pass on from the current span: the span itself when
/// spans are exported, else the context it continues (if any).
pub(crate) fn current() -> Option<TraceContext> {
    of_span(&Span::current())
}

/// The context to pass on from `span` (see [`current`]).
pub(crate) fn of_span(span: &Span) -> Option<TraceContext> {
    let exported = span.context();
    if let Some(context) = TraceContext::of(exported.span().span_context()) {
        return Some(context);
    }
    span.with_subscriber(|(id, dispatch)| {
        let span = dispatch.downcast_ref::<Registry>()?.span(id)?;
        span.scope()
            .find_map(|span| span.extensions().get::<Continued>().map(|c| c.0.clone()))
    })
    .flatten()
}

/// `version-traceid-parentid-flags`: two, 32, 16 and two lowercase hex
/// digits (a later version may append fields after a dash).
fn well_formed(traceparent: &str) -> bool {
    let mut parts = traceparent.splitn(5, '-');
    let lengths = [2, 32, 16, 2];
    lengths.iter().all(|&len| {
        parts.next().is_some_and(|part| {
            part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    })
}

/// Reads the two headers from borrowed values.
struct Headers<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent,
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// Receives the two headers.
#[derive(Default)]
struct Owned {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Owned {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE => self.tracestate = Some(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const TRACEPARENT_VALUE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_parses_and_keeps_its_tracestate() {
        let context = TraceContext::parse(TRACEPARENT_VALUE, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(context.traceparent(), TRACEPARENT_VALUE);
        assert_eq!(context.tracestate(), Some("congo=t61rcWkgMzE"));
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(context.span_context().is_remote());
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad:?}");
        }
    }

    #[test]
    fn an_oversized_tracestate_is_dropped() {
        let long = format!("a={}", "x".repeat(MAX_TRACESTATE_LEN));
        let context = TraceContext::parse(TRACEPARENT_VALUE, Some(&long)).unwrap();
        assert_eq!(context.tracestate(), None);
    }

    #[test]
    fn without_export_a_continued_context_reaches_child_spans_unchanged() {
        let context = TraceContext::parse(TRACEPARENT_VALUE, None).unwrap();
        let subscriber = tracing_subscriber::registry().with(tracing_subscriber::fmt::layer());
        tracing::subscriber::with_default(subscriber, || {
            let parent = tracing::info_span!("request");
            continue_trace(&parent, &context);
            let _entered = parent.enter();
            let child = tracing::info_span!("write");
            let _child = child.enter();
            assert_eq!(current(), Some(context.clone()));
        });
        assert_eq!(current(), None, "no span, no context");
    }
}
