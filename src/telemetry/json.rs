//! JSON log lines that name their trace: `trace_id` and `span_id` first in
//! each line written inside a traced span, so that a log search finds every
//! line of one request, its outbox relay and its worker, and a trace viewer
//! links to them.

use std::fmt;

use opentelemetry::trace::{SpanId, TraceId};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OtelData;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::telemetry::trace_context::Continued;

/// Wraps the JSON event format: the ids go first inside its object.
pub(super) struct WithTraceIds<F>(pub(super) F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = trace_ids(ctx) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let Some(rest) = line.strip_prefix('{') else {
            return writer.write_str(&line);
        };
        write!(writer, "{{\"trace_id\":\"{trace_id}\"")?;
        if let Some(span_id) = span_id {
            write!(writer, ",\"span_id\":\"{span_id}\"")?;
        }
        if !rest.starts_with('}') {
            writer.write_char(',')?;
        }
        writer.write_str(rest)
    }
}

/// The trace of the innermost span that has one: an exported span's own
/// ids, or the trace id of a context continued without export.
fn trace_ids<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(TraceId, Option<SpanId>)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let scope = ctx.event_scope()?;
    for span in scope {
        let extensions = span.extensions();
        if let Some(otel) = extensions.get::<OtelData>() {
            if let Some(trace_id) = otel.trace_id().filter(|id| *id != TraceId::INVALID) {
                return Some((trace_id, otel.span_id()));
            }
        }
        if let Some(Continued(context)) = extensions.get::<Continued>() {
            return Some((context.trace_id(), None));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use serde_json::Value;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::telemetry::trace_context::{self, TraceContext};

    /// Collects what the layer writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Self;

        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    impl Lines {
        fn json(&self) -> Vec<Value> {
            let bytes = self.0.lock().unwrap().clone();
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).expect("a JSON line"))
                .collect()
        }
    }

    fn json_layer<S>(lines: &Lines) -> impl tracing_subscriber::Layer<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .map_event_format(WithTraceIds)
            .with_writer(lines.clone())
    }

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn without_export_lines_in_a_continued_trace_name_it_and_others_do_not() {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(json_layer(&lines));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let span = tracing::info_span!("request", route = "/x");
            trace_context::continue_trace(&span, &TraceContext::parse(TRACEPARENT, None).unwrap());
            let _entered = span.enter();
            tracing::info!(status = 201, "inside");
        });
        let lines = lines.json();
        assert_eq!(lines[0]["message"], "outside");
        assert!(lines[0].get("trace_id").is_none(), "{}", lines[0]);
        assert_eq!(lines[1]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(lines[1].get("span_id").is_none(), "{}", lines[1]);
        assert_eq!(lines[1]["status"], 201);
        assert_eq!(lines[1]["span"]["route"], "/x");
    }

    #[test]
    fn with_export_lines_name_their_span_in_the_callers_trace() {
        let lines = Lines::default();
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(json_layer(&lines))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let mut span_ids = Vec::new();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request");
            trace_context::continue_trace(&span, &TraceContext::parse(TRACEPARENT, None).unwrap());
            let _entered = span.enter();
            tracing::info!("inside");
            let passed_on = trace_context::current().expect("a context to pass on");
            span_ids.push(passed_on.traceparent()[36..52].to_owned());
        });
        let line = &lines.json()[0];
        assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(line["span_id"], span_ids[0], "the span passed on");
        assert_ne!(line["span_id"], "00f067aa0ba902b7", "not the caller's");
    }
}
