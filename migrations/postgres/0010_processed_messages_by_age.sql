-- The ids of processed messages are kept as long as the bus may deliver a
-- message again, then pruned oldest first (see pipeline/prune.rs): this
-- index finds them. (Building it locks the table's writes for as long as
-- the build takes: about a second per million rows.)
CREATE INDEX IF NOT EXISTS processed_messages_processed_at_idx
    ON processed_messages (processed_at);
