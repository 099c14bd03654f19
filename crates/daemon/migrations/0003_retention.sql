-- unisync's store on PostgreSQL, version 3: what retention prunes carries its time in a
-- column of its own, so that pruning reads an index instead of every record.

-- When each dead letter was made (the letter's `failed_at`).
ALTER TABLE dead_letters ADD COLUMN failed_at bigint;
UPDATE dead_letters SET failed_at = (letter ->> 'failed_at')::bigint;
ALTER TABLE dead_letters ALTER COLUMN failed_at SET NOT NULL;
CREATE INDEX dead_letters_failed_at ON dead_letters (failed_at);

-- When each backfill edit id was accepted. Ids remembered before this version carry 0: they
-- count as old, as on sled.
ALTER TABLE seen_edits ADD COLUMN accepted_ms bigint NOT NULL DEFAULT 0;
ALTER TABLE seen_edits ALTER COLUMN accepted_ms DROP DEFAULT;
CREATE INDEX seen_edits_accepted ON seen_edits (accepted_ms);
