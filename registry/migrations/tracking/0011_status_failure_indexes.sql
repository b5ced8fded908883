-- The status report's failure reads walked the heap: at 1,000,000 rows
-- with 10,000 failed (1%, spread over the table) they took most of the
-- status page's 113 ms. These indexes answer them from the index alone,
-- each reading at most its sample's entries.
--
-- The new failures (Store.NewFailures: rows that failed for the first time
-- since a moment) filtered every failed row of a type through the heap
-- for retry_count and updated_at (10,000 failed rows: 8,000 buffers,
-- 160-520 ms). geo_registry_new_failures holds only the rows on their
-- first failure, by when they failed: the count is one index range.
-- Only a failing sync writes an entry (state 3 with retry_count 1); the
-- second failure of a row moves it out again.
CREATE INDEX geo_registry_new_failures ON geo_registry (replicable, updated_at)
  WHERE state = 3 AND retry_count = 1;

-- The top failure reasons (Store.TopFailures) read the message of each
-- sampled row from the heap (1,000 rows per type: 13 ms with the table
-- cached, 113 ms without). The two failure indexes now carry the message,
-- so the sample is an index-only scan. The entries grow by the message
-- (at most regstore.MaxFailureLenMax bytes, well within an index entry's
-- limit) and are written when they already were: when a row fails. The
-- claims that walk geo_registry_failed_due for due retries use it as
-- before. verification_retry_at is included beside the expression because
-- PostgreSQL plans an index-only scan only when every column a query
-- names is stored in the index.
DROP INDEX geo_registry_failed_due;
CREATE INDEX geo_registry_failed_due ON geo_registry (replicable, retry_at)
  INCLUDE (last_sync_failure) WHERE state = 3;

DROP INDEX geo_registry_verify_failed;
CREATE INDEX geo_registry_verify_failed ON geo_registry
  (replicable, (coalesce(verification_retry_at, '-infinity'::timestamptz)))
  INCLUDE (verification_retry_at, verification_failure)
  WHERE state = 2 AND verification_state = 3;
