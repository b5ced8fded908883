package events_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/strategy"
)

func TestNewPublisherRejectsBadNames(t *testing.T) {
	t.Parallel()
	_, err := events.NewPublisher([]string{"package_file", "Bad-Name"})
	assert.ErrorIs(t, err, strategy.ErrInvalidName)
	_, err = events.NewPublisher([]string{"upload", "upload"})
	assert.ErrorContains(t, err, "twice")
	p, err := events.NewPublisher(nil)
	require.NoError(t, err)
	assert.False(t, p.Known("upload"))
}

func TestOpString(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "created", events.OpCreated.String())
	assert.Equal(t, "updated", events.OpUpdated.String())
	assert.Equal(t, "deleted", events.OpDeleted.String())
	assert.Equal(t, "op(7)", events.Op(7).String())
}

// TestPublishRefusesBadEvents: nothing is written for an event the
// consumer could not deliver.
func TestPublishRefusesBadEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	db := e.primary
	assert.ErrorIs(t, e.pub.Publish(ctx, db, "nope", events.OpCreated, 1, ""), strategy.ErrUnknownReplicable)
	assert.ErrorIs(t, e.pub.PublishMany(ctx, db, "nope", events.OpCreated, []int64{1}), strategy.ErrUnknownReplicable)
	assert.ErrorIs(t, e.pub.PublishDeleted(ctx, db, "nope", []events.Deleted{{1, "k"}}), strategy.ErrUnknownReplicable)
	assert.Error(t, e.pub.Publish(ctx, db, "upload", events.OpDeleted, 1, ""), "deleted without key")
	assert.Error(t, e.pub.Publish(ctx, db, "upload", events.OpCreated, 0, ""), "id 0")
	assert.Error(t, e.pub.Publish(ctx, db, "upload", events.OpCreated, -1, ""), "id -1")
	assert.Error(t, e.pub.Publish(ctx, db, "upload", events.Op(4), 1, ""), "op 4")
	assert.Error(t, e.pub.Publish(ctx, db, "upload", events.OpUpdated, 1, "a\x00b"), "NUL in key")
	assert.Error(t, e.pub.PublishMany(ctx, db, "upload", events.OpDeleted, []int64{1}), "many deleted")
	assert.Error(t, e.pub.PublishMany(ctx, db, "upload", events.OpCreated, []int64{1, 0}), "many id 0")
	assert.Error(t, e.pub.PublishDeleted(ctx, db, "upload", []events.Deleted{{1, "k"}, {2, ""}}), "deleted item without key")
	assert.Error(t, e.pub.PublishDeleted(ctx, db, "upload", []events.Deleted{{0, "k"}}), "deleted item id 0")
	require.NoError(t, e.pub.PublishMany(ctx, db, "upload", events.OpCreated, nil))
	require.NoError(t, e.pub.PublishDeleted(ctx, db, "upload", nil))
	assert.Empty(t, e.outboxIDs(t))
}

// TestPublishIsTransactional: events commit and roll back with the
// application's transaction, and a commit sends the wake-up notification.
func TestPublishIsTransactional(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	l := pq.NewListener(e.primaryURL, 10*time.Millisecond, time.Second, nil)
	defer l.Close()
	require.NoError(t, l.Listen(events.NotifyChannel))

	tx, err := e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, e.pub.Publish(ctx, tx, "upload", events.OpCreated, 1, ""))
	require.NoError(t, tx.Rollback())
	assert.Empty(t, e.outboxIDs(t), "rolled back")

	tx, err = e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, e.pub.Publish(ctx, tx, "upload", events.OpUpdated, 2, "u/2"))
	require.NoError(t, e.pub.PublishMany(ctx, tx, "upload", events.OpCreated, []int64{3, 4}))
	require.NoError(t, e.pub.PublishDeleted(ctx, tx, "package_file", []events.Deleted{{5, "p/5"}, {6, "p/6"}}))
	require.NoError(t, tx.Commit())
	select {
	case n := <-l.Notify:
		require.NotNil(t, n)
		assert.Equal(t, events.NotifyChannel, n.Channel)
	case <-time.After(waitGuard):
		t.Fatal("no notification after commit")
	}
	type row struct {
		Replicable string  `db:"replicable"`
		Op         int     `db:"op"`
		ModelID    int64   `db:"model_id"`
		BlobKey    *string `db:"blob_key"`
	}
	var rows []row
	require.NoError(t, e.primary.Select(&rows, `SELECT replicable, op, model_id, blob_key FROM geo_events ORDER BY id`))
	s := func(v string) *string { return &v }
	assert.Equal(t, []row{
		{"upload", 2, 2, s("u/2")}, {"upload", 1, 3, nil}, {"upload", 1, 4, nil},
		{"package_file", 3, 5, s("p/5")}, {"package_file", 3, 6, s("p/6")},
	}, rows)
}

// TestPublishRefusesInvalidKeys: a key the secondary's storage would refuse
// (strategy.ValidateKey) is refused at publish time, for every op, with an
// error matching strategy.ErrInvalidKey, inside the application's
// transaction, which stays usable: nothing of the refused event is
// written, and the transaction's other work commits.
func TestPublishRefusesInvalidKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	hostile := []string{"../../etc/passwd", "/abs", "a/../b", "a//b", "a/", "./a", "a\\b", "a\x00b", strings.Repeat("k", strategy.MaxKeyLen+1)}
	tx, err := e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	for _, key := range hostile {
		for _, op := range []events.Op{events.OpCreated, events.OpUpdated, events.OpDeleted} {
			err := e.pub.Publish(ctx, tx, "upload", op, 1, key)
			assert.ErrorIs(t, err, strategy.ErrInvalidKey, "Publish %v with key %q", op, key)
		}
		err := e.pub.PublishDeleted(ctx, tx, "upload", []events.Deleted{{1, "ok/1"}, {2, key}})
		assert.ErrorIs(t, err, strategy.ErrInvalidKey, "PublishDeleted with key %q", key)
	}
	assert.ErrorIs(t, e.pub.Publish(ctx, tx, "upload", events.OpDeleted, 1, ""), strategy.ErrInvalidKey, "deleted without a key")
	assert.ErrorIs(t, e.pub.PublishDeleted(ctx, tx, "upload", []events.Deleted{{1, ""}}), strategy.ErrInvalidKey, "deleted item without a key")

	// Still allowed: no key for created and updated, and valid keys.
	require.NoError(t, e.pub.Publish(ctx, tx, "upload", events.OpCreated, 3, ""))
	require.NoError(t, e.pub.Publish(ctx, tx, "upload", events.OpUpdated, 4, "u/..4/.x"))
	require.NoError(t, e.pub.PublishDeleted(ctx, tx, "upload", []events.Deleted{{5, "u/5"}}))
	require.NoError(t, tx.Commit(), "the application's transaction is still usable after refused publishes")
	var models []int64
	require.NoError(t, e.primary.Select(&models, `SELECT model_id FROM geo_events ORDER BY id`))
	assert.Equal(t, []int64{3, 4, 5}, models, "only the accepted events are in the outbox")
}
