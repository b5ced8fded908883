-- staged_key is a key whose bytes a sync is about to make visible (or made
-- visible) without its settle having committed: recorded, committed, just
-- before the bytes are published, cleared by the settle that records them
-- as blob_key. If the settle never commits (a crash, a failed directory
-- fsync), the next sync or delete of the row removes those bytes, so no
-- file is left at a key no row knows about.
ALTER TABLE geo_registry ADD COLUMN staged_key text;
