package regstore_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

// TestPreparedStatementRecoversFromSchemaChange: a schema change that
// changes a prepared statement's result type makes PostgreSQL refuse the
// cached plan; that costs one failed call, after which the statement is
// prepared again and works.
func TestPreparedStatementRecoversFromSchemaChange(t *testing.T) {
	ctx := context.Background()
	db := pg.NewDatabase(t)
	require.NoError(t, registry.MigratePrimary(ctx, db))
	db.SetMaxOpenConns(1) // one connection: the one the statement is prepared on
	cs, err := regstore.NewChecksumStore(db, regstore.Options{})
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, `INSERT INTO geo_checksums (replicable, model_id, state, checksum) VALUES ('x', 1, 2, 'ab')`)
	require.NoError(t, err)
	got, err := cs.ChecksumsOf(ctx, "x", []int64{1})
	require.NoError(t, err)
	require.Equal(t, map[int64]string{1: "ab"}, got)

	_, err = db.ExecContext(ctx, `ALTER TABLE geo_checksums ALTER COLUMN checksum TYPE varchar(100)`)
	require.NoError(t, err)
	// The cached plan's result type changed: PostgreSQL may refuse it once.
	if _, err := cs.ChecksumsOf(ctx, "x", []int64{1}); err != nil {
		require.ErrorContains(t, err, "cached plan must not change result type")
	}
	got, err = cs.ChecksumsOf(ctx, "x", []int64{1})
	require.NoError(t, err, "the statement is prepared again after the refusal")
	require.Equal(t, map[int64]string{1: "ab"}, got)
}
