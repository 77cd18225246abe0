-- name: queue_notify_set
-- Whether inserts into queue_messages NOTIFY idle workers; written only when it changes.
UPDATE queue_notify SET enabled = %(enabled)s WHERE enabled IS DISTINCT FROM %(enabled)s

-- name: queue_notify_enabled
SELECT enabled FROM queue_notify
