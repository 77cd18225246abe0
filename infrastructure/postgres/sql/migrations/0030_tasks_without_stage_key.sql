-- A task row no longer carries a foreign key to its stage. The key was checked once per inserted row (a lookup of
-- the stage row, locking it FOR KEY SHARE), which made it the largest single cost of creating a wide stage: about
-- 37% of the server's time to COPY 100,000 task rows. The engine writes a stage's row and its tasks in one unit of
-- work, and every delete removes a job's tasks before its stages (rounds: `delete_round_tasks` first; pruning:
-- `prune_tasks` in chunks, then `prune_left_tasks` deletes what a chunk may have left before the job row goes).
ALTER TABLE tasks DROP CONSTRAINT tasks_job_id_stage_fkey;
