-- geo_registry_status (0005) let a status report count the registry with
-- index-only scans. Since 0007 the report reads geo_registry_counts and
-- nothing reads that index, but every inserted row and every change of
-- state or verification state still wrote an entry to it: about a fifth
-- of the cost of a backfill's insert (1,000,000 rows in batches of
-- 10,000: 111k rows/s with it, 142k without, on the same table here).
DROP INDEX IF EXISTS geo_registry_status;
