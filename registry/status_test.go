package registry_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

// digest is a deterministic SHA-256 in lowercase hex, as the engine
// prints checksums and as content-addressed keys embed them.
func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// lfsKey is an LFS-style content-addressed key: lfs/<oid[0:2]>/<oid[2:4]>/<oid>.
func lfsKey(oid string) string { return "lfs/" + oid[:2] + "/" + oid[2:4] + "/" + oid }

// reasonCase is a set of failure texts of one cause, differing only in
// what names the record (ids, keys, digests, sizes, ephemeral ports),
// and the one reason they must be grouped under.
type reasonCase struct {
	name  string
	kind  string // "sync" (last_sync_failure) or "verification" (verification_failure)
	texts []string
	want  string
}

// reasonCases are the engine's own failure texts (what syncengine,
// blobreplicator, the downloader, blob.Bucket, the settle path and the
// verifiers store; captured from the replicator, geotest and geochaos
// runs) for several records each. Cases of different causes must stay
// distinct reasons: HTTP statuses, SQLSTATE codes, configured timeouts,
// errno texts and the words of the message all differ between cases.
func reasonCases() []reasonCase {
	var cs []reasonCase
	add := func(name, kind, want string, n int, text func(i int) string) {
		c := reasonCase{name: name, kind: kind, want: want}
		for i := range n {
			c.texts = append(c.texts, text(i))
		}
		cs = append(cs, c)
	}
	ids := []int64{1, 42, 1234567, 9, 100000000007}
	oid := func(i int) string { return digest(fmt.Sprint("lfs object ", i)) }
	add("lfs key, disk full", "sync", `transfer: fetch lfs_object/N: blob: write "lfs/*": write lfs/*: no space left on device`, 4,
		func(i int) string {
			k := lfsKey(oid(i))
			return fmt.Sprintf(`transfer: fetch lfs_object/%d: blob: write %q: write %s: no space left on device`, ids[i], k, k)
		})
	add("lfs key, disk error", "sync", `transfer: fetch lfs_object/N: blob: write "lfs/*": write lfs/*: input/output error`, 3,
		func(i int) string {
			k := lfsKey(oid(i))
			return fmt.Sprintf(`transfer: fetch lfs_object/%d: blob: write %q: write %s: input/output error`, ids[i], k, k)
		})
	add("package file key, directory fsync", "sync",
		`commit: registry: settle synced package_file/N: publish: blob: commit "packages/*": sync directory: fsync packages/*: input/output error`, 3,
		func(i int) string {
			pkg, name := 7+i*31, []string{"lp.tgz", "left-pad-1.3.0.tgz", "README"}[i]
			return fmt.Sprintf(`commit: registry: settle synced package_file/%d: publish: blob: commit "packages/%d/files/%d/%s": sync directory: fsync packages/%d/files/%d: input/output error`,
				ids[i], pkg, ids[i], name, pkg, ids[i])
		})
	add("versioned key, unlink", "sync",
		`registry: delete claimed item/N: remove: remove item/N: remove "items/*": input/output error`, 3,
		func(i int) string {
			return fmt.Sprintf(`registry: delete claimed item/%d: remove: remove item/%d: remove "items/%d/%d-v%d": input/output error`, ids[i], ids[i], ids[i], ids[i], i+1)
		})
	add("checksum mismatch against the wanted checksum", "sync",
		`transfer: fetch upload/N: checksum mismatch: received H, want H`, 3,
		func(i int) string {
			return fmt.Sprintf("transfer: fetch upload/%d: checksum mismatch: received %s, want %s", ids[i], digest(fmt.Sprint("got", i)), digest(fmt.Sprint("want", i)))
		})
	add("checksum mismatch against the announced checksum", "sync",
		`transfer: fetch upload/N: checksum mismatch: received H, primary announced H`, 2,
		func(i int) string {
			return fmt.Sprintf("transfer: fetch upload/%d: checksum mismatch: received %s, primary announced %s", ids[i], digest(fmt.Sprint("got", i)), digest(fmt.Sprint("ann", i)))
		})
	for _, st := range []int{502, 503} {
		add(fmt.Sprintf("HTTP %d", st), "sync", fmt.Sprintf("transfer: fetch item/N: primary answered %d", st), 3,
			func(i int) string { return fmt.Sprintf("transfer: fetch item/%d: primary answered %d", ids[i], st) })
	}
	add("HTTP 404 missing on primary", "sync",
		"transfer: fetch package_file/N: primary answered 404 missing_on_primary: the record's bytes are missing on the primary", 3,
		func(i int) string {
			return fmt.Sprintf("transfer: fetch package_file/%d: primary answered 404 missing_on_primary: the record's bytes are missing on the primary", ids[i])
		})
	for _, d := range []string{"1s", "30s"} {
		add("stall after "+d, "sync", "transfer: fetch item/N: transfer stalled: i/o timeout after "+d, 2,
			func(i int) string {
				return fmt.Sprintf("transfer: fetch item/%d: transfer stalled: i/o timeout after %s", ids[i], d)
			})
	}
	add("size mismatch in the headers", "sync", "transfer: fetch chaos_item/N: size mismatch: Content-Length N, X-Geo-Size N", 3,
		func(i int) string {
			return fmt.Sprintf("transfer: fetch chaos_item/%d: size mismatch: Content-Length %d, X-Geo-Size %d", ids[i], 86+i*4000, 505+i*9000)
		})
	add("size mismatch in the body", "sync", "transfer: fetch item/N: size mismatch: received N bytes, announced N", 3,
		func(i int) string {
			return fmt.Sprintf("transfer: fetch item/%d: size mismatch: received %d bytes, announced %d", ids[i], 10+i, 4096*(i+1))
		})
	add("connection reset", "sync", "transfer: fetch chaos_item/N: read tcp 127.0.0.1:N->127.0.0.1:44627: read: connection reset by peer", 3,
		func(i int) string {
			return fmt.Sprintf("transfer: fetch chaos_item/%d: read tcp 127.0.0.1:%d->127.0.0.1:44627: read: connection reset by peer", ids[i], 37004+i*97)
		})
	add("primary database refused", "sync", "blob key: dial tcp 127.0.0.1:34703: connect: connection refused", 2,
		func(int) string { return "blob key: dial tcp 127.0.0.1:34703: connect: connection refused" })
	for _, code := range []string{"57P03", "57014"} {
		msg := map[string]string{"57P03": "the database system is shutting down", "57014": "canceling statement due to statement timeout"}[code]
		add("lib/pq "+code, "sync", "blob key: pq: "+msg+" ("+code+")", 2,
			func(int) string { return "blob key: pq: " + msg + " (" + code + ")" })
	}
	add("settle batch, bad connection", "sync", "commit: registry: settle synced batch of N: driver: bad connection", 3,
		func(i int) string {
			return fmt.Sprintf("commit: registry: settle synced batch of %d: driver: bad connection", []int{10, 2, 1}[i])
		})
	add("adapter's bad key", "sync", "strategy package_file returned a bad key for N: blob: invalid key: dot segment", 2,
		func(i int) string {
			return fmt.Sprintf("strategy package_file returned a bad key for %d: blob: invalid key: dot segment", ids[i])
		})
	add("bad key, too long", "sync", "strategy package_file returned a bad key for N: blob: invalid key: longer than 1024 bytes", 2,
		func(i int) string {
			return fmt.Sprintf("strategy package_file returned a bad key for %d: blob: invalid key: longer than 1024 bytes", ids[i])
		})
	add("cut to MaxFailureLen", "sync", `blob: fetch lfs_object/N: blob: create "lfs/*": open …`, 3,
		func(i int) string {
			k := lfsKey(oid(i))
			full := fmt.Sprintf(`blob: fetch lfs_object/%d: blob: create %q: open %s: permission denied`, ids[i], k, k)
			// Cut as the store cuts, at a point that depends on the length
			// of the id before it: inside the second key.
			cut := strings.LastIndex(full, "open ") + len("open ") + []int{2, 5, 40}[i]
			return full[:cut] + "…"
		})
	add("verification sent back to sync", "sync", "verification failed: checksum mismatch: local H, primary H", 2,
		func(i int) string {
			return fmt.Sprintf("verification failed: checksum mismatch: local %s, primary %s", digest(fmt.Sprint("l", i)), digest(fmt.Sprint("p", i)))
		})
	add("verification: checksum mismatch", "verification", "checksum mismatch: local H, primary H", 3,
		func(i int) string {
			return fmt.Sprintf("checksum mismatch: local %s, primary %s", digest(fmt.Sprint("l", i)), digest(fmt.Sprint("p", i)))
		})
	add("verification: missing copy", "verification", "missing on the secondary: replicator: missing on secondary: items/*", 3,
		func(i int) string {
			return fmt.Sprintf("missing on the secondary: replicator: missing on secondary: items/%d/%d-v1", ids[i], ids[i])
		})
	add("verification: missing LFS copy", "verification", "missing on the secondary: replicator: missing on secondary: lfs/*", 3,
		func(i int) string {
			return "missing on the secondary: replicator: missing on secondary: " + lfsKey(oid(i))
		})
	add("verification: unreadable copy", "verification", `verify upload/N: read: blob: open "uploads/*": permission denied`, 3,
		func(i int) string {
			// A random secret segment (mixed case) and a UUID, as uploads use.
			secret := []string{"qXk2vB9sLmZpT4wRyN8aHc", "ZZtopSecretSegmentAbCdEf", "aaaaBBBBccccDDDDeeee"}[i]
			return fmt.Sprintf(`verify upload/%d: read: blob: open "uploads/%s/%s/avatar.png": permission denied`, ids[i], secret,
				fmt.Sprintf("%08x-0000-4000-8000-%012x", i, ids[i]))
		})
	return cs
}

// TestNormalizeReason checks each set of the engine's failure texts
// normalizes to its one reason, and that different causes stay distinct.
func TestNormalizeReason(t *testing.T) {
	t.Parallel()
	seen := map[string]string{}
	for _, c := range reasonCases() {
		for _, text := range c.texts {
			if got := registry.NormalizeReason(text); got != c.want {
				t.Errorf("%s: NormalizeReason(%q)\n got %q\nwant %q", c.name, text, got, c.want)
			}
		}
		if other, ok := seen[c.want]; ok {
			t.Errorf("%s and %s normalize to the same reason %q", c.name, other, c.want)
		}
		seen[c.want] = c.name
	}
	// Texts with nothing naming a record are unchanged.
	for _, text := range []string{
		"blob: fetch item/N: context canceled",
		"blob: fetch item/7: blob: transfer stalled: i/o timeout after 1s: net/http: timeout awaiting response headers",
		"blob key: pq: canceling statement due to statement timeout (57014)",
		"blob: fetch item/3: stopped after 10 redirects",
	} {
		want := strings.Replace(text, "item/7", "item/N", 1)
		want = strings.Replace(want, "item/3", "item/N", 1)
		if got := registry.NormalizeReason(text); got != want {
			t.Errorf("NormalizeReason(%q) = %q, want %q", text, got, want)
		}
	}
}

// TestTopFailuresGroupsByNormalizedReason is issue 20 item 12: TopFailures
// folded every "/digits", which turned lfs/bb/63/bb634d8... into
// lfs/bb/N/bb634d8..., so failures of different objects never grouped.
// Each set of the engine's failure texts must be one reason counting all
// its rows, with the least text as its example; different causes stay
// distinct reasons.
func TestTopFailuresGroupsByNormalizedReason(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db, _ := newStore(t, regstore.Options{})
	cases := reasonCases()
	var id int64
	wantSync, wantVerify := map[string]int64{}, map[string]int64{}
	examples := map[string]string{}
	for _, c := range cases {
		for _, text := range c.texts {
			id++
			mustMarkPending(t, s, "t", id)
			q := `UPDATE geo_registry SET state = 3, retry_count = 1, retry_at = now(), last_sync_failure = $2 WHERE replicable = 't' AND model_id = $1`
			if c.kind == "verification" {
				q = `UPDATE geo_registry SET state = 2, last_synced_at = now(), verification_state = 3, verification_retry_at = now(), verification_failure = $2 WHERE replicable = 't' AND model_id = $1`
			}
			if _, err := db.ExecContext(ctx, q, id, text); err != nil {
				t.Fatal(err)
			}
			if ex, ok := examples[c.want]; !ok || text < ex {
				examples[c.want] = text
			}
		}
		if c.kind == "verification" {
			wantVerify[c.want] += int64(len(c.texts))
		} else {
			wantSync[c.want] += int64(len(c.texts))
		}
	}
	got, err := s.TopFailures(ctx, []string{"t"}, len(cases), 1000)
	if err != nil {
		t.Fatal(err)
	}
	check := func(kind string, rs []registry.FailureReason, want map[string]int64) {
		t.Helper()
		gotCounts := map[string]int64{}
		for _, r := range rs {
			gotCounts[r.Reason] = r.Count
			if r.Example != examples[r.Reason] {
				t.Errorf("%s reason %q: example %q, want %q", kind, r.Reason, r.Example, examples[r.Reason])
			}
		}
		for reason, n := range want {
			if gotCounts[reason] != n {
				t.Errorf("%s reason %q: count %d, want %d", kind, reason, gotCounts[reason], n)
			}
		}
		if len(rs) != len(want) {
			t.Errorf("%s: %d reasons, want %d:\n%s", kind, len(rs), len(want), fmtReasons(rs))
		}
	}
	check("sync", got["t"].Sync, wantSync)
	check("verification", got["t"].Verification, wantVerify)
}

func fmtReasons(rs []registry.FailureReason) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "  %d × %q\n", r.Count, r.Reason)
	}
	return b.String()
}

// TestTopFailuresUsesPartialIndexes checks with EXPLAIN that the status
// report's failure sample reads only failed rows, through their partial
// indexes, on a settled registry where a percent of the rows is synced but
// not yet verified: a plan that reached verification failures through
// geo_registry_verify_due would read every unverified row from the heap
// (141 ms at 1,000,000 rows).
func TestTopFailuresUsesPartialIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db, _ := newStore(t, regstore.Options{})
	if _, err := s.InsertMissing(ctx, "a", ids(1, 50000)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `
UPDATE geo_registry SET state = CASE WHEN model_id % 100 = 0 THEN 0 WHEN model_id % 100 = 1 THEN 3 ELSE 2 END,
  verification_state = CASE WHEN model_id % 100 IN (0, 1, 2) THEN 0 WHEN model_id % 1000 = 5 THEN 3 ELSE 2 END,
  retry_at = now(), verification_retry_at = now()`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `ANALYZE geo_registry`); err != nil {
		t.Fatal(err)
	}
	plan, err := s.Store.ExplainTopFailures(ctx, []string{"a"}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range []string{"geo_registry_failed_due", "geo_registry_verify_failed"} {
		if !strings.Contains(plan, idx) {
			t.Errorf("top failures plan does not use %s:\n%s", idx, plan)
		}
	}
	for _, bad := range []string{"Seq Scan on geo_registry", "geo_registry_verify_due"} {
		if strings.Contains(plan, bad) {
			t.Errorf("top failures plan uses %s:\n%s", bad, plan)
		}
	}
}

// The failure sample of a status report is an index-only scan (migration
// 0011: the failure indexes carry the message): it reads at most sample
// index entries per type and kind, and table pages only where vacuum has
// not yet marked them all-visible (not asserted: vacuum's horizon is the
// cluster's). Reading each sampled message from the heap cost 13 ms with the
// table cached and 113 ms without at 1,000,000 rows (10,000 failed), most
// of a status page's 50 ms budget. The sample's counts are unchanged.
func TestTopFailuresReadTheirIndexesOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db, _ := newStore(t, regstore.Options{})
	if _, err := s.InsertMissing(ctx, "item", ids(1, 50000)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `
UPDATE geo_registry SET state = CASE WHEN model_id % 100 = 1 THEN 3 ELSE 2 END,
  verification_state = CASE WHEN model_id % 1000 = 5 THEN 3 WHEN model_id % 100 = 1 THEN 0 ELSE 2 END,
  last_sync_failure = CASE WHEN model_id % 100 = 1 THEN 'primary answered 503 for item/' || model_id END,
  verification_failure = CASE WHEN model_id % 1000 = 5 THEN 'checksum mismatch: got ' || md5(model_id::text) || md5(model_id::text) END,
  retry_at = now() + model_id * interval '1 s', verification_retry_at = now() + model_id * interval '1 s'`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `VACUUM ANALYZE geo_registry`); err != nil {
		t.Fatal(err)
	}
	plan, err := s.Store.ExplainAnalyzeTopFailures(ctx, []string{"item"}, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range []string{"geo_registry_failed_due", "geo_registry_verify_failed"} {
		if !strings.Contains(plan, "Index Only Scan Backward using "+idx) {
			t.Errorf("top failures plan does not read %s alone:\n%s", idx, plan)
		}
	}
	if m := regexp.MustCompile(`Index Scan|Seq Scan`).FindString(plan); m != "" {
		t.Errorf("top failures plan reads the table (%s):\n%s", m, plan)
	}
	got, err := s.TopFailures(ctx, []string{"item"}, 5, 100)
	if err != nil {
		t.Fatal(err)
	}
	f := got["item"]
	if len(f.Sync) != 1 || f.Sync[0].Reason != "primary answered 503 for item/N" || f.Sync[0].Count != 100 {
		t.Errorf("sync failures = %+v, want 100 × primary answered 503 for item/N (the sample)", f.Sync)
	}
	if len(f.Verification) != 1 || f.Verification[0].Reason != "checksum mismatch: got H" || f.Verification[0].Count != 50 {
		t.Errorf("verification failures = %+v, want 50 × checksum mismatch: got H (all of them)", f.Verification)
	}
}
