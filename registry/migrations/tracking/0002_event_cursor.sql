-- Where each outbox consumer has read up to on the primary's geo_events.
CREATE TABLE geo_event_cursor (
  consumer text PRIMARY KEY,
  xid xid8 NOT NULL,
  id bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
