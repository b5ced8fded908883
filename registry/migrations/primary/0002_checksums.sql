-- geo_checksums: the primary's verification state, one row per record of
-- every registered type (generic: no per-type table).
-- state: 0 pending, 1 started, 2 succeeded, 3 failed, 4 disabled.
-- gen is re-assigned from geo_checksums_gen whenever the record's bytes
-- change (the publisher's created/updated events): a checksum computed
-- under an older gen is never stored (no stale checksum).
-- checksum is the last GOOD SHA-256 (lowercase hex): a later re-verification
-- that fails keeps it, so secondaries go on comparing with good bytes.
CREATE SEQUENCE geo_checksums_gen;

CREATE TABLE geo_checksums (
  replicable text NOT NULL,
  model_id bigint NOT NULL,
  state smallint NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 4),
  gen bigint NOT NULL DEFAULT nextval('geo_checksums_gen'),
  checksum text,
  size bigint,
  verified_at timestamptz,
  failure text,
  retry_count int NOT NULL DEFAULT 0,
  retry_at timestamptz,
  lease_owner text,
  lease_expires_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (replicable, model_id)
);

ALTER SEQUENCE geo_checksums_gen OWNED BY geo_checksums.gen;

-- Partial indexes on the due work only, so claims never re-walk settled rows.
CREATE INDEX geo_checksums_pending ON geo_checksums (replicable, gen) WHERE state = 0;
CREATE INDEX geo_checksums_failed_due ON geo_checksums (replicable, retry_at) WHERE state = 3;
CREATE INDEX geo_checksums_reverify ON geo_checksums (replicable, verified_at) WHERE state = 2;
CREATE INDEX geo_checksums_lease ON geo_checksums (replicable, lease_expires_at) WHERE state = 1;
