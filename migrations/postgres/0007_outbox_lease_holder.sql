-- Who holds an outbox row's lease: a fresh id per claim. Leases are short
-- and renewed while the relay still works on its batch, so that rows
-- claimed by a process that died are claimed again within seconds. A
-- relay renews and releases only the rows that still carry its id: once a
-- lease has run out and another relay has claimed the row, it is the other
-- relay's.
ALTER TABLE outbox ADD COLUMN locked_by UUID;
