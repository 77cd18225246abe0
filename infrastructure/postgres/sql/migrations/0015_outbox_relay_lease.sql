-- The outbox relay claims rows with a lease instead of holding their row locks while it sends, so no
-- PostgreSQL transaction stays open across a network call to the transport. A row is claimed by stamping
-- `relay_token` and `relay_until`; only the holder of the token marks it sent; a relay that dies leaves a lease
-- that expires, and the row is claimed again (the deterministic message id lets duplicate detection drop a
-- second send).
ALTER TABLE queue_messages
    ADD COLUMN relay_token uuid,
    ADD COLUMN relay_until timestamptz;
