-- Partial indexes for the secondary's verification engine: it claims synced
-- rows whose verification is pending or failed and due, succeeded rows
-- verified before the re-verification cutoff, and rows whose verification
-- lease expired. Each branch walks its own index.
CREATE INDEX geo_registry_verify_due ON geo_registry
  (replicable, (coalesce(verification_retry_at, '-infinity'::timestamptz)))
  WHERE state = 2 AND verification_state IN (0, 3);
CREATE INDEX geo_registry_reverify ON geo_registry (replicable, verified_at)
  WHERE state = 2 AND verification_state = 2;
CREATE INDEX geo_registry_verify_lease ON geo_registry (replicable, lease_expires_at)
  WHERE state = 2 AND verification_state = 1;
