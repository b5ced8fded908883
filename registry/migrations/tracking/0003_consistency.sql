-- geo_consistency: the consistency engine's resumable cursor per type.
-- after_id is the last primary id reconciled in the current pass (0: the
-- next pass starts at the beginning).
CREATE TABLE geo_consistency (
  replicable text PRIMARY KEY,
  after_id bigint NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT now()
);
