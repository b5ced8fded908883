-- geo_registry_counts: the registry's row counts per (type, state,
-- verification state, mismatch, missing) kept as deltas, so a status report
-- reads a few rows instead of counting the whole registry (1,000,000 rows:
-- ~130 ms for a bare count(*) here, and GitLab's per-state counts ran past
-- 50 minutes on 300M rows). Statement-level triggers with transition tables
-- append, for every statement that changes geo_registry, one row per group
-- it changed, with n the net change; nothing is updated in place, so
-- concurrent statements never wait for each other here. Store.FoldCounts
-- folds the deltas into one row per group from time to time.
-- progress_at is the latest time a row of the group reached it as synced
-- (last_synced_at) or synced and verified (verified_at): the status
-- report's "last progress".
CREATE TABLE geo_registry_counts (
  replicable text NOT NULL,
  state smallint NOT NULL,
  verification_state smallint NOT NULL,
  checksum_mismatch boolean NOT NULL,
  missing_on_primary boolean NOT NULL,
  n bigint NOT NULL,
  progress_at timestamptz
);

-- SET search_path FROM CURRENT: the function finds geo_registry_counts in
-- the schema it was migrated into, whatever the writer's search_path.
CREATE FUNCTION geo_registry_count() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO geo_registry_counts
    SELECT replicable, state, verification_state, checksum_mismatch, missing_on_primary, count(*),
      max(CASE WHEN state = 2 THEN CASE WHEN verification_state = 2 THEN verified_at ELSE last_synced_at END END)
    FROM geo_new GROUP BY 1, 2, 3, 4, 5;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO geo_registry_counts
    SELECT replicable, state, verification_state, checksum_mismatch, missing_on_primary, -count(*), NULL
    FROM geo_old GROUP BY 1, 2, 3, 4, 5;
  ELSE
    -- Rows that stay in their group (lease renewals, staged keys) cancel
    -- out and write nothing.
    INSERT INTO geo_registry_counts
    SELECT replicable, state, verification_state, checksum_mismatch, missing_on_primary, sum(d), max(p)
    FROM (
      SELECT replicable, state, verification_state, checksum_mismatch, missing_on_primary, 1 AS d,
        CASE WHEN state = 2 THEN CASE WHEN verification_state = 2 THEN verified_at ELSE last_synced_at END END AS p
      FROM geo_new
      UNION ALL
      SELECT replicable, state, verification_state, checksum_mismatch, missing_on_primary, -1, NULL
      FROM geo_old
    ) x
    GROUP BY 1, 2, 3, 4, 5 HAVING sum(d) <> 0;
  END IF;
  RETURN NULL;
END
$$;

-- A trigger with transition tables handles one event.
CREATE TRIGGER geo_registry_count_insert AFTER INSERT ON geo_registry
  REFERENCING NEW TABLE AS geo_new FOR EACH STATEMENT EXECUTE FUNCTION geo_registry_count();
CREATE TRIGGER geo_registry_count_update AFTER UPDATE ON geo_registry
  REFERENCING OLD TABLE AS geo_old NEW TABLE AS geo_new FOR EACH STATEMENT EXECUTE FUNCTION geo_registry_count();
CREATE TRIGGER geo_registry_count_delete AFTER DELETE ON geo_registry
  REFERENCING OLD TABLE AS geo_old FOR EACH STATEMENT EXECUTE FUNCTION geo_registry_count();
-- TRUNCATE has no transition table: it would leave the counts wrong, so
-- it is refused (delete the rows instead, or use Store.RecountCounts after).
CREATE FUNCTION geo_registry_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'geo_registry cannot be truncated: its row counts (geo_registry_counts) would be wrong; DELETE the rows instead';
END
$$;
CREATE TRIGGER geo_registry_no_truncate BEFORE TRUNCATE ON geo_registry
  FOR EACH STATEMENT EXECUTE FUNCTION geo_registry_no_truncate();

-- The triggers exist (and hold off writers until this migration commits):
-- count the rows already there.
INSERT INTO geo_registry_counts
SELECT replicable, state, verification_state, checksum_mismatch, missing_on_primary, count(*),
  max(CASE WHEN state = 2 THEN CASE WHEN verification_state = 2 THEN verified_at ELSE last_synced_at END END)
FROM geo_registry GROUP BY 1, 2, 3, 4, 5;
