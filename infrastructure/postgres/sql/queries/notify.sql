-- name: queue_notify_set
-- Whether inserts into queue_messages NOTIFY idle workers; written only when it changes.
UPDATE queue_notify SET enabled = %(enabled)s WHERE enabled IS DISTINCT FROM %(enabled)s

-- name: queue_notify_enabled
SELECT enabled FROM queue_notify

-- name: queue_depths
-- Messages waiting or in flight per queue (the PostgreSQL queue's depth; in Service Bus mode, the outbox not yet
-- relayed). Reads the partial index of ready rows.
SELECT queue, count(*) AS depth FROM queue_messages WHERE state = 'ready' GROUP BY queue
