-- The W3C trace context of the change an outbox row announces, sent with
-- its message as the `traceparent` and `tracestate` headers, so that the
-- worker continues the trace of the request that made the change. NULL for
-- rows written before this column existed or outside any trace.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
ALTER TABLE outbox ADD COLUMN tracestate TEXT;
