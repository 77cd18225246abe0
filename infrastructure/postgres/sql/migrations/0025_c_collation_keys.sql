-- Keys the engine itself makes (task ids, queue names, message ids) compare byte by byte. Under a linguistic
-- collation (the database default: en_US.utf8 on Azure, C.UTF-8 here) every index comparison of these long ids
-- with a shared 64-character job prefix goes through strcoll; under "C" it is a memcmp, which makes creating
-- a wide stage (one index entry per task and per message) measurably cheaper on the server. The order is then
-- code-point order, the order core sorts task ids in, so SQL `ORDER BY task_id` and core agree on lock order.
ALTER TABLE tasks ALTER COLUMN task_id TYPE text COLLATE "C";
ALTER TABLE queue_messages ALTER COLUMN queue TYPE text COLLATE "C", ALTER COLUMN message_id TYPE text COLLATE "C";
