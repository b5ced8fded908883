-- geo_events: the outbox, written by the application in its own transaction.
-- op: 1 created, 2 updated, 3 deleted.
CREATE TABLE geo_events (
  id bigserial PRIMARY KEY,
  xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
  replicable text NOT NULL,
  op smallint NOT NULL,            -- 1 created, 2 updated, 3 deleted
  model_id bigint NOT NULL,
  blob_key text,
  payload jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX geo_events_xid_id ON geo_events (xid, id);
CREATE INDEX geo_events_created_at ON geo_events (created_at);
CREATE TABLE geo_events_pruned (one bool PRIMARY KEY DEFAULT true CHECK (one), xid xid8 NOT NULL, id bigint NOT NULL);
