package replicator_test

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
)

func readBlob(t *testing.T, b *blob.Bucket, key string) ([]byte, bool) {
	t.Helper()
	r, err := b.Open(context.Background(), key)
	if err != nil {
		return nil, false
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	require.NoError(t, err)
	return data, true
}

// TestRejoinOldPrimary promotes a fully synced secondary (the preflight
// does not refuse), lets the old primary take writes after the promotion
// (what it committed after the standby's last replay), writes on the new
// primary, then brings the old primary's site back as a secondary with a
// fresh tracking database over its own storage: the old-only and diverged
// records are listed from the old database and quarantined, only the
// records whose bytes differ are transferred (bytes counted), the sites end
// identical, and the old-only bytes no live row names are removed while a
// key a live row shares is kept (R7).
func TestRejoinOldPrimary(t *testing.T) {
	t.Parallel()
	f := newFailoverPair(t)
	ctx := context.Background()

	sec, stopSec := runSecondary(t, f.secondaryConfig(f.tracking, f.sbyDB, f.oldHTTP.URL, f.secStorage))
	var ids []int64
	for i := range 30 {
		id, err := f.app.Create(ctx, 0, payload(i, 1000+i*100))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	f.waitReplayed()
	geotest.WaitFor(t, stall, "the secondary syncs and verifies every record", func() (bool, string) {
		v, s, n := registryCounts(t, f.tracking)
		lag, err := events.ReadLag(ctx, f.sbyDB, sec.EventStats().Cursor, time.Now())
		if err != nil {
			return false, err.Error()
		}
		return v == len(ids) && lag.Events == 0, fmt.Sprintf("verified %d synced %d rows %d; events behind %d", v, s, n, lag.Events)
	})
	stopSec()

	// A clean promotion: nothing to force.
	rep, err := replicator.Promote(ctx, replicator.PromoteConfig{Tracking: f.tracking, Standby: f.sbyDB, PromoteStandby: true})
	require.NoError(t, err, "reasons: %v", rep.Reasons)
	require.Empty(t, rep.Reasons)
	require.EqualValues(t, len(ids), rep.ChecksumsKept["item"])
	require.EqualValues(t, 0, rep.ChecksumsReset["item"])

	// The old primary goes on taking writes for a while (a partition):
	// records created and changed there are unknown to the new primary.
	var oldOnly []int64
	for i := range 2 {
		id, err := f.app.Create(ctx, 0, payload(500+i, 2000))
		require.NoError(t, err)
		oldOnly = append(oldOnly, id)
	}
	inPlace, newKey := ids[3], ids[4]
	require.NoError(t, f.app.UpdateInPlace(ctx, inPlace, payload(600, 1500)))
	require.NoError(t, f.app.Update(ctx, newKey, payload(601, 1600)))
	geotest.WaitFor(t, stall, "the old primary checksums its writes", func() (bool, string) {
		var n int
		require.NoError(t, f.oldDB.GetContext(ctx, &n, `SELECT count(*) FROM geo_checksums WHERE state = 2`))
		return n == len(ids)+len(oldOnly), fmt.Sprintf("%d of %d", n, len(ids)+len(oldOnly))
	})
	f.stopOld()

	// The new primary, on the promoted database and the secondary's storage.
	newItems := &testtype.Type{TypeName: "item", Table: "items", DB: f.sbyDB}
	served := &geotest.TransferLog{}
	newPrimary, newHTTP, _ := startPrimary(t, newItems, f.sbyDB, f.secStorage, f.creds, served, f.log.Named("new-primary"))
	newApp := &testtype.App{Type: newItems, Storage: f.secStorage, Publisher: newPrimary.Publisher()}
	var fresh []int64
	for i := range 2 {
		id, err := newApp.Create(ctx, 0, payload(700+i, 2500))
		require.NoError(t, err)
		fresh = append(fresh, id)
	}
	changed := ids[10]
	require.NoError(t, newApp.Update(ctx, changed, payload(800, 1800)))
	geotest.WaitFor(t, stall, "the new primary checksums its records", func() (bool, string) {
		var n, all int
		require.NoError(t, f.sbyDB.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE state = 2), count(*) FROM geo_checksums`).Scan(&n, &all))
		return n == all, fmt.Sprintf("%d of %d", n, all)
	})

	// Before the old site rejoins: what only it has, listed from its
	// database, and quarantined.
	oldSet := replicator.NewSet()
	require.NoError(t, oldSet.Register(f.app.Type))
	list, err := replicator.ListOldOnly(ctx, replicator.RejoinConfig{Old: f.oldDB, New: f.sbyDB, Strategies: oldSet})
	require.NoError(t, err)
	var listed []int64
	for _, r := range list.Records {
		listed = append(listed, r.ID)
		key, err := f.app.Type.BlobKey(ctx, r.ID)
		require.NoError(t, err)
		require.Equal(t, key, r.Key, "record %d: its key on the old primary", r.ID)
	}
	wantListed := append(append([]int64{}, oldOnly...), inPlace, newKey, changed)
	require.ElementsMatch(t, wantListed, listed, "old-only and diverged records")
	require.EqualValues(t, len(ids)+len(oldOnly), list.Same+list.OldOnly+list.Diverged, "every old record classified")
	require.EqualValues(t, len(oldOnly), list.OldOnly, "old-only")
	copied, _, err := replicator.QuarantineOldOnly(ctx, f.oldStorage, list, "")
	require.NoError(t, err)
	require.Equal(t, len(wantListed), copied)
	for _, r := range list.Records {
		data, ok := readBlob(t, f.oldStorage, replicator.QuarantinePrefixDefault+"/"+r.Key)
		require.True(t, ok, "quarantined %d", r.ID)
		require.Equal(t, r.OldChecksum, sum(data), "quarantined %d: the old primary's bytes", r.ID)
	}

	// What the rejoin must transfer: the new primary's records whose bytes
	// the old storage lacks at their key.
	var all []int64
	require.NoError(t, f.sbyDB.SelectContext(ctx, &all, `SELECT id FROM items ORDER BY id`))
	want := map[int64]int64{} // id → bytes
	liveKeys := map[string]bool{}
	for _, id := range all {
		key, err := newItems.BlobKey(ctx, id)
		require.NoError(t, err)
		liveKeys[key] = true
		data, _ := readBlob(t, f.secStorage, key)
		have, ok := readBlob(t, f.oldStorage, key)
		if !ok || sum(have) != sum(data) {
			want[id] = int64(len(data))
		}
	}
	wantIDs := make([]int64, 0, len(want))
	for id := range want {
		wantIDs = append(wantIDs, id)
	}
	require.ElementsMatch(t, append(append([]int64{}, fresh...), changed, inPlace), wantIDs,
		"records whose bytes differ: created and changed on the new primary, changed in place on the old")

	// The old primary's PostgreSQL becomes a standby of the new primary
	// (pg_rewind): what only it had is gone from it now.
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Minute) // a hang guard
	defer rcancel()
	require.NoError(t, f.old.RewindAsStandby(rctx, f.standby))
	rejoinedDB := openDB(t, f.old.URL("postgres"))
	geotest.WaitFor(t, stall, "the rewound old primary replays the new primary", func() (bool, string) {
		var inRecovery bool
		var n int
		err := rejoinedDB.QueryRowContext(ctx, `SELECT pg_is_in_recovery(), (SELECT count(*) FROM items WHERE id = ANY($1))`, pq.Array(fresh)).Scan(&inRecovery, &n)
		if err != nil {
			return false, err.Error()
		}
		return inRecovery && n == len(fresh), fmt.Sprintf("in recovery %v, %d of the new records", inRecovery, n)
	})
	var gone int
	require.NoError(t, rejoinedDB.GetContext(ctx, &gone, `SELECT count(*) FROM items WHERE id = ANY($1)`, pq.Array(oldOnly)))
	require.Zero(t, gone, "old-only records rewound away")

	// The old site rejoins: fresh tracking database, its own storage, its
	// rewound PostgreSQL as its standby.
	tracking3 := pg.NewDatabase(t)
	require.NoError(t, registry.MigrateTracking(ctx, tracking3))
	cfg3 := f.secondaryConfig(tracking3, rejoinedDB, newHTTP.URL, f.oldStorage)
	cfg3.ConsistencyInterval = 0
	_, stop3 := runSecondary(t, cfg3)
	geotest.WaitFor(t, stall, "the rejoined site syncs and verifies every record", func() (bool, string) {
		v, s, n := registryCounts(t, tracking3)
		return v == len(all) && n == len(all), fmt.Sprintf("verified %d synced %d rows %d of %d", v, s, n, len(all))
	})
	// Written after the rejoin: arrives through the events.
	late := payload(900, 3000)
	lateID, err := newApp.Create(ctx, 0, late)
	require.NoError(t, err)
	want[lateID] = int64(len(late))
	lateKey, err := newItems.BlobKey(ctx, lateID)
	require.NoError(t, err)
	liveKeys[lateKey] = true
	geotest.WaitFor(t, stall, "a record written after the rejoin arrives", func() (bool, string) {
		v, s, n := registryCounts(t, tracking3)
		return v == len(all)+1, fmt.Sprintf("verified %d synced %d rows %d of %d", v, s, n, len(all)+1)
	})
	stop3()
	got := map[int64]int64{}
	for _, tr := range served.All() {
		require.Equal(t, "item", tr.Replicable)
		_, twice := got[tr.ModelID]
		require.False(t, twice, "record %d transferred twice", tr.ModelID)
		got[tr.ModelID] = tr.Bytes
	}
	require.Equal(t, want, got, "transfers: only the records whose bytes differ, each once, with their bytes")

	// Old-only bytes no live row names go; a key a live row names stays.
	removed, kept, err := replicator.RemoveOldOnly(ctx, tracking3, f.oldStorage, list)
	require.NoError(t, err)
	listedKey := map[int64]string{}
	for _, r := range list.Records {
		listedKey[r.ID] = r.Key
	}
	// The keys only old versions name: the old-only records', the one the
	// old primary's update moved to, the one the new primary's update left.
	wantRemoved := []string{listedKey[oldOnly[0]], listedKey[oldOnly[1]], listedKey[newKey], listedKey[changed]}
	keyInPlace := listedKey[inPlace]
	require.ElementsMatch(t, wantRemoved, removed, "removed: keys only old versions name")
	require.Equal(t, []string{keyInPlace}, kept, "kept: the key a live row names (its bytes replaced by the sync)")

	// The sites are identical: every live key with the new primary's bytes,
	// nothing else outside the quarantine.
	var extra []string
	for key, err := range f.oldStorage.Keys(ctx, "") {
		require.NoError(t, err)
		if strings.HasPrefix(key, replicator.QuarantinePrefixDefault+"/") {
			continue
		}
		if !liveKeys[key] {
			extra = append(extra, key)
		}
	}
	sort.Strings(extra)
	require.Empty(t, extra, "files outside the quarantine that no live record names")
	for key := range liveKeys {
		a, ok := readBlob(t, f.oldStorage, key)
		require.True(t, ok, "rejoined site has %s", key)
		b, _ := readBlob(t, f.secStorage, key)
		require.Equal(t, sum(b), sum(a), "rejoined site's %s", key)
	}
}
