-- geo_processes: one row per secondary process (SecondaryConfig.Owner)
-- sharing this tracking database, upserted on every heartbeat (one
-- statement) and deleted on a graceful shutdown. A row whose heartbeat_at
-- is older than registry.ProcessDeadAfterBeats heartbeat intervals is a
-- dead process (killed, crashed, partitioned); live processes delete dead
-- rows after replicator.DeadProcessRetention.
--
-- Besides liveness, a row carries what only the process knows, so that a
-- reader without a live process (geoctl status, a status page) can show
-- it: the singleton loops it holds (roles: consumer, consistency,
-- existence), its syncs in flight per type, its consistency (backfill)
-- progress per type, and, in the process holding the event consumer, the
-- event lag. Times come from the writer's clock (registry.Options.Now),
-- like every time the registry writes.
CREATE TABLE geo_processes (
  owner text PRIMARY KEY,
  host text NOT NULL DEFAULT '',
  pid integer NOT NULL DEFAULT 0,
  version text NOT NULL DEFAULT '',
  started_at timestamptz NOT NULL,
  heartbeat_at timestamptz NOT NULL,
  heartbeat_interval_ms bigint NOT NULL CHECK (heartbeat_interval_ms > 0),
  types text[] NOT NULL DEFAULT '{}',
  roles text[] NOT NULL DEFAULT '{}',
  in_flight jsonb NOT NULL DEFAULT '{}',
  backfill jsonb NOT NULL DEFAULT '{}',
  -- NULL unless this process's event consumer is active.
  event_lag_seconds double precision,
  event_lag_events bigint,
  event_fell_behind boolean NOT NULL DEFAULT false
);
