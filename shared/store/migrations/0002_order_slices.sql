-- 0002: freeze-limit slices. An intent above the exchange's freeze quantity is sent as several
-- broker orders ("slices"), one orders row each: correlation_id "<intent's id>-<n>",
-- parent_id = the intent's correlation id, slice_no = n (1-based). An unsliced intent keeps one
-- row under its own correlation id with parent_id '' and slice_no 0, exactly as before.
ALTER TABLE orders ADD COLUMN parent_id text    NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN slice_no  integer NOT NULL DEFAULT 0 CHECK (slice_no >= 0);
ALTER TABLE orders DROP CONSTRAINT orders_intent_msg_id_key;
ALTER TABLE orders ADD CONSTRAINT orders_intent_slice_key UNIQUE (intent_msg_id, slice_no);
CREATE INDEX orders_parent_idx ON orders (parent_id) WHERE parent_id <> '';
