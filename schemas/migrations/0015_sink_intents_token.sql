-- The token of the insert that carried a batch: a sink inserts the batches of all its
-- partitions together, so the token names several partitions' ranges, and a batch
-- re-formed after a crash is inserted (or read back) under it. Intents written before
-- this migration have Token '' and name their own batch's token.
ALTER TABLE obs_sink_intents ADD COLUMN IF NOT EXISTS Token String DEFAULT '';
