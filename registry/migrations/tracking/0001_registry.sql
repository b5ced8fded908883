-- geo_registry: one row per (replicable, model_id) the secondary tracks.
-- state: 0 pending, 1 started, 2 synced, 3 failed.
-- verification_state: 0 pending, 1 started, 2 succeeded, 3 failed, 4 disabled.
-- seq is re-assigned from geo_registry_seq every time a row is (re)marked
-- pending: it is both the generation a settle must still match (R1) and the
-- FIFO order of pending work.
CREATE SEQUENCE geo_registry_seq;

CREATE TABLE geo_registry (
  replicable text NOT NULL,
  model_id bigint NOT NULL,
  state smallint NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 3),
  seq bigint NOT NULL DEFAULT nextval('geo_registry_seq'),
  retry_count int NOT NULL DEFAULT 0,
  retry_at timestamptz,
  last_synced_at timestamptz,
  last_sync_failure text,
  missing_on_primary bool NOT NULL DEFAULT false,
  blob_key text,
  blob_size bigint,
  lease_owner text,
  lease_expires_at timestamptz,
  verification_state smallint NOT NULL DEFAULT 0 CHECK (verification_state BETWEEN 0 AND 4),
  verification_checksum text,
  verification_checksum_mismatched text,
  checksum_mismatch bool NOT NULL DEFAULT false,
  verified_at timestamptz,
  verification_retry_count int NOT NULL DEFAULT 0,
  verification_retry_at timestamptz,
  verification_failure text,
  verification_started_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (replicable, model_id)
);

ALTER SEQUENCE geo_registry_seq OWNED BY geo_registry.seq;

-- Partial indexes on the due states only, so claims never re-walk synced rows.
CREATE INDEX geo_registry_pending ON geo_registry (replicable, seq) WHERE state = 0;
CREATE INDEX geo_registry_failed_due ON geo_registry (replicable, retry_at) WHERE state = 3;
CREATE INDEX geo_registry_lease ON geo_registry (replicable, lease_expires_at) WHERE state = 1;
-- Non-synced counts for status without scanning synced rows.
CREATE INDEX geo_registry_unsynced ON geo_registry (replicable, state) WHERE state <> 2;

-- Types whose sync is paused by an operator: never claimed while listed.
CREATE TABLE geo_paused (
  replicable text PRIMARY KEY,
  paused_at timestamptz NOT NULL
);
