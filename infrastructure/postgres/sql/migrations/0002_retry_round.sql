-- A job's retry round: an operator retry bumps it, and the stage and finalize messages sent after it carry it
-- in their ids, so duplicate detection (ours or Service Bus's) never drops them as repeats of the first round.
ALTER TABLE jobs ADD COLUMN retry_round int NOT NULL DEFAULT 0 CHECK (retry_round >= 0);
