package events_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/events"
)

// checksumRow is a geo_checksums row as the publisher leaves it.
type checksumRow struct {
	State    int16          `db:"state"`
	Gen      int64          `db:"gen"`
	Checksum sql.NullString `db:"checksum"`
}

func getChecksum(t *testing.T, e *env, replicable string, id int64) (checksumRow, bool) {
	t.Helper()
	var r checksumRow
	err := e.primary.Get(&r, `SELECT state, gen, checksum FROM geo_checksums WHERE replicable = $1 AND model_id = $2`, replicable, id)
	if err == sql.ErrNoRows {
		return r, false
	}
	require.NoError(t, err)
	return r, true
}

// TestPublishInvalidatesPrimaryChecksums: created and updated events make
// the record's checksum row pending with a new generation and no checksum
// (its bytes changed legitimately), in the publishing transaction; deleted
// events remove it; a rolled-back publish changes nothing.
func TestPublishInvalidatesPrimaryChecksums(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.publish(t, "upload", 1)
	r, ok := getChecksum(t, e, "upload", 1)
	require.True(t, ok, "created event: checksum row")
	require.Equal(t, int16(0), r.State)
	require.False(t, r.Checksum.Valid)

	verified := func(id int64) int64 {
		_, err := e.primary.Exec(`UPDATE geo_checksums SET state = 2, checksum = 'aa' WHERE replicable = 'upload' AND model_id = $1`, id)
		require.NoError(t, err)
		r, _ := getChecksum(t, e, "upload", id)
		return r.Gen
	}
	gen := verified(1)

	// A rolled-back update leaves the checksum alone.
	tx, err := e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, errOf(e.pub.Publish(ctx, tx, "upload", events.OpUpdated, 1, "")))
	require.NoError(t, tx.Rollback())
	r, _ = getChecksum(t, e, "upload", 1)
	require.Equal(t, checksumRow{State: 2, Gen: gen, Checksum: sql.NullString{String: "aa", Valid: true}}, r)

	tx, err = e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, errOf(e.pub.Publish(ctx, tx, "upload", events.OpUpdated, 1, "k")))
	require.NoError(t, tx.Commit())
	r, _ = getChecksum(t, e, "upload", 1)
	require.Equal(t, int16(0), r.State, "updated: pending")
	require.Greater(t, r.Gen, gen, "updated: new generation")
	require.False(t, r.Checksum.Valid, "updated: no checksum")

	// PublishMany, with a duplicate id, and a row of another type untouched.
	e.publish(t, "package_file", 2)
	gen2 := verified(2)
	tx, err = e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, errOf(e.pub.PublishMany(ctx, tx, "upload", events.OpUpdated, []int64{2, 3, 2})))
	require.NoError(t, tx.Commit())
	r, _ = getChecksum(t, e, "upload", 2)
	require.Equal(t, int16(0), r.State)
	require.Greater(t, r.Gen, gen2)
	_, ok = getChecksum(t, e, "upload", 3)
	require.True(t, ok)
	_, ok = getChecksum(t, e, "package_file", 2)
	require.True(t, ok)

	tx, err = e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, errOf(e.pub.PublishDeleted(ctx, tx, "upload", []events.Deleted{{ModelID: 2, BlobKey: "k2"}, {ModelID: 3, BlobKey: "k3"}})))
	require.NoError(t, errOf(e.pub.Publish(ctx, tx, "upload", events.OpDeleted, 1, "k1")))
	require.NoError(t, tx.Commit())
	for _, id := range []int64{1, 2, 3} {
		_, ok = getChecksum(t, e, "upload", id)
		require.False(t, ok, "deleted %d: checksum row removed", id)
	}
	_, ok = getChecksum(t, e, "package_file", 2)
	require.True(t, ok, "another type's row stays")
}
