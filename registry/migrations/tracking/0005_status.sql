-- geo_registry_status covers every row that is not both synced and
-- verified, with what a status report counts, so the report is two
-- index-only scans: this index for the rows still in motion (few in a
-- settled registry) and geo_registry_reverify for the synced and verified
-- rest. Together they hold each row exactly once, whatever the mix, and
-- neither scan touches the table. It supersedes geo_registry_unsynced,
-- which only status used.
CREATE INDEX geo_registry_status ON geo_registry
  (replicable, state, verification_state, checksum_mismatch, missing_on_primary) INCLUDE (last_synced_at)
  WHERE NOT (state = 2 AND verification_state = 2);
DROP INDEX geo_registry_unsynced;
