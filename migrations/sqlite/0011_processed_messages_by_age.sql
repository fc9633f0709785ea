-- The ids of processed messages are pruned oldest first once the bus can
-- no longer deliver them again (see the PostgreSQL migration of the same
-- name).
CREATE INDEX processed_messages_processed_at_idx ON processed_messages (processed_at);
