-- geo_registry_status (0005) let a status report count the registry with
-- index-only scans. Since 0007 the report reads geo_registry_counts, but
-- every inserted row and every change of state or verification state
-- still wrote an entry to it: about a fifth of the cost of a backfill's
-- insert (1,000,000 rows in batches of 10,000: 111k rows/s with it, 142k
-- without, on the same table here).
--
-- One reader was left: the status report's sample of verification
-- failures (Store.TopFailures: state = 2 AND verification_state = 3),
-- which without it filters every synced-but-unverified row through the
-- heap (1,000,000 rows, 1% unverified: 141 ms instead of 0.2 ms).
-- geo_registry_verify_failed holds just those rows, in the order the
-- sample takes them; rows being backfilled or synced never enter it.
CREATE INDEX geo_registry_verify_failed ON geo_registry
  (replicable, (coalesce(verification_retry_at, '-infinity'::timestamptz)))
  WHERE state = 2 AND verification_state = 3;
DROP INDEX IF EXISTS geo_registry_status;
