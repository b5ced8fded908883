-- Storage keys may be shared by several records (content-addressed types:
-- LFS objects by oid, registry blobs by digest) and reused after a delete.
-- Bytes at a key are removed only when no registry row records
-- (blob_key) or stages (staged_key) that key (rule R7): these two indexes
-- answer that check in one index probe each, whatever the registry's size.
--
-- geo_registry_key is in byte order (COLLATE "C") and ends with the row's
-- key, so the existence scan can walk synced rows in the order a storage
-- lists its keys (byte order for every backend) and resume exactly after
-- a row; state and seq are included so that walk is an index-only scan
-- (3-13 ms per 10,000 rows at 1,000,000 against 36-71 ms through the
-- heap, measured here). Rows not synced yet (a backfill's pending rows)
-- have no blob_key and take no entry.
CREATE INDEX geo_registry_key ON geo_registry (blob_key COLLATE "C", replicable COLLATE "C", model_id)
  INCLUDE (state, seq) WHERE blob_key IS NOT NULL;
CREATE INDEX geo_registry_staged_key ON geo_registry (staged_key COLLATE "C")
  WHERE staged_key IS NOT NULL;
