package events_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/events"
)

// TestConcurrentPublishersLoseNothing: 8 publishers whose transactions
// commit in random order after random delays, 20,000 events in all, read
// by a consumer running at the same time. Every committed event arrives
// exactly once here (no failures, so no redelivery), in (xid, id) order
// across the whole run; rolled-back events never arrive. A consumer with a
// plain id cursor fails this test: ids are taken at insert, not at commit.
func TestConcurrentPublishersLoseNothing(t *testing.T) {
	t.Parallel()
	const publishers, total = 8, 20_000
	e := newEnv(t)
	ctx := context.Background()
	rec := newRecorder()
	cfg := e.config(t, rec)
	cfg.BatchSize = 500
	c, err := events.NewConsumer(cfg)
	require.NoError(t, err)
	run(t, c)
	waitActive(t, c)

	var reserved atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(p), 42))
			for {
				n := int64(1 + rng.IntN(8))
				end := reserved.Add(n)
				start := end - n
				if start >= total {
					return
				}
				end = min(end, total)
				ids := make([]int64, 0, end-start)
				for id := start + 1; id <= end; id++ {
					ids = append(ids, id)
				}
				// Some transactions roll back: their events must never arrive.
				rollback := rng.IntN(20) == 0
				if err := publishTx(ctx, e, rng, ids, rollback); err != nil {
					errs <- err
					return
				}
				if rollback {
					if err := publishTx(ctx, e, rng, ids, false); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	want := e.outboxIDs(t)
	require.Len(t, want, total)
	waitGrowing(t, "events consumed", rec.distinct, total)
	assert.Equal(t, want, sortedKeys(rec.seen), "consumed event ids = committed event ids")

	all := rec.events()
	require.Len(t, all, total, "deliveries (no failure happened, so no duplicate is allowed)")
	for i := 1; i < len(all); i++ {
		if !before(all[i-1], all[i]) {
			t.Fatalf("event %d (xid %d id %d) delivered after (xid %d id %d)", i, all[i].XID, all[i].ID, all[i-1].XID, all[i-1].ID)
		}
	}
	models := map[int64]bool{}
	for _, ev := range all {
		models[ev.ModelID] = true
	}
	assert.Len(t, models, total, "distinct model ids")
	waitFor(t, waitGuard, "lag back to zero", func() bool {
		s := c.Stats()
		return s.LagEvents == 0 && s.LagSeconds == 0
	})
	s := c.Stats()
	assert.EqualValues(t, total, s.Consumed)
	assert.Zero(t, s.SkippedUnknown+s.SkippedMalformed)
	t.Logf("batches: %d, polls: %d", len(rec.batches), s.Polls)
}

// publishTx publishes ids in one transaction through one of the three
// publish methods, holds the transaction open 0-5ms, and commits or rolls
// back.
func publishTx(ctx context.Context, e *env, rng *rand.Rand, ids []int64, rollback bool) error {
	tx, err := e.primary.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	name := names[rng.IntN(len(names))]
	switch rng.IntN(3) {
	case 0:
		for _, id := range ids {
			if err := e.pub.Publish(ctx, tx, name, events.OpUpdated, id, ""); err != nil {
				return err
			}
		}
	case 1:
		if err := e.pub.PublishMany(ctx, tx, name, events.OpCreated, ids); err != nil {
			return err
		}
	default:
		items := make([]events.Deleted, len(ids))
		for i, id := range ids {
			items[i] = events.Deleted{ModelID: id, BlobKey: fmt.Sprintf("k/%d", id)}
		}
		if err := e.pub.PublishDeleted(ctx, tx, name, items); err != nil {
			return err
		}
	}
	time.Sleep(time.Duration(rng.IntN(5000)) * time.Microsecond) // the workload: commit late, in random order
	if rollback {
		return tx.Rollback()
	}
	return tx.Commit()
}

// TestFirstStartBeginsAtEnd: a consumer without a cursor starts at the end
// of the log (the snapshot xmin); events of transactions that ended before
// it are backfill's, not the consumer's.
func TestFirstStartBeginsAtEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.publish(t, "package_file", 1, 2, 3)
	// The start is the cluster-wide snapshot xmin: events of transactions
	// newer than the oldest one running anywhere (another test's) count as
	// not yet seen and would be delivered. Wait until 1-3 are truly past.
	waitFor(t, waitGuard, "events 1-3 below the snapshot xmin", func() bool {
		var past bool
		err := e.primary.Get(&past, `SELECT pg_snapshot_xmin(pg_current_snapshot()) > max(xid) FROM geo_events`)
		return err == nil && past
	})
	rec := newRecorder()
	cfg := e.config(t, rec)
	cfg.NotifyURL = e.primaryURL // exercise the wake-up path too
	c, err := events.NewConsumer(cfg)
	require.NoError(t, err)
	run(t, c)
	waitActive(t, c)
	e.publish(t, "upload", 4, 5)
	waitFor(t, waitGuard, "2 events", func() bool { return rec.distinct() >= 2 })
	assert.Equal(t, []int64{4, 5}, rec.modelIDs())
	assert.Equal(t, "upload", rec.events()[0].Replicable)
	assert.Equal(t, events.OpCreated, rec.events()[0].Op)
	assert.False(t, rec.events()[0].CreatedAt.IsZero())
	waitFor(t, waitGuard, "last event time", func() bool { return !c.Stats().LastEventCreatedAt.IsZero() })
}

// TestRestartMidBatchLosesNothing: the consumer stops while its handler
// works on a batch (its context cancelled, the handler failing); a new
// consumer on the same cursor gets that batch again and everything after.
// A batch the handler acknowledged after the cancel is not redelivered.
func TestRestartMidBatchLosesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// First start needs a cursor: start once, stop, then publish.
	first := newRecorder()
	cfg := e.config(t, first)
	cfg.BatchSize = 10
	c1, err := events.NewConsumer(cfg)
	require.NoError(t, err)
	var batches atomic.Int32
	ctx1, cancel1 := context.WithCancel(context.Background())
	first.before = func(ctx context.Context, b []events.Event) error {
		if batches.Add(1) == 3 {
			cancel1() // the process is going down in the middle of batch 3
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- c1.Run(ctx1) }()
	waitActive(t, c1)
	for i := range 10 {
		ids := make([]int64, 10)
		for j := range ids {
			ids[j] = int64(i*10 + j + 1)
		}
		e.publish(t, "package_file", ids...)
	}
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(waitGuard):
		t.Fatal("Run did not return after its context was cancelled")
	}
	require.Equal(t, 20, first.distinct(), "batches 1 and 2 acknowledged")

	// Restart: a handler that panics once, then one that acknowledges a batch
	// after its context was cancelled.
	second := newRecorder()
	var panicked atomic.Bool
	cfg2 := e.config(t, second)
	cfg2.BatchSize = 10
	ctx2, cancel2 := context.WithCancel(context.Background())
	second.before = func(ctx context.Context, b []events.Event) error {
		if panicked.CompareAndSwap(false, true) {
			panic("handler bug")
		}
		if b[0].ModelID == 51 {
			cancel2() // acknowledged after the cancel: the cursor must still move
		}
		return nil
	}
	c2, err := events.NewConsumer(cfg2)
	require.NoError(t, err)
	done2 := make(chan error, 1)
	go func() { done2 <- c2.Run(ctx2) }()
	select {
	case err := <-done2:
		require.NoError(t, err)
	case <-time.After(waitGuard):
		t.Fatal("Run did not return after its context was cancelled")
	}
	assert.Equal(t, int64(1), c2.Stats().HandlerErrors, "the panic counts as a failed batch")
	assert.Equal(t, []int64{21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
		41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60}, second.modelIDs(),
		"batch 3 (21-30) again after the crash, once after the panic")

	third := newRecorder()
	cfg3 := e.config(t, third)
	cfg3.BatchSize = 10
	c3, err := events.NewConsumer(cfg3)
	require.NoError(t, err)
	run(t, c3)
	waitFor(t, waitGuard, "the rest", func() bool { return third.distinct() >= 40 })
	want := []int64{}
	for id := int64(61); id <= 100; id++ {
		want = append(want, id)
	}
	assert.Equal(t, want, third.modelIDs(), "61-100; 51-60 was acknowledged after the cancel, so not again")
	third.checkBatchOrder(t)
}

// TestSecondConsumerWaitsThenTakesOver: two consumers share a tracking
// database and a Name; one is active at a time, and the other takes over
// when the first stops.
func TestSecondConsumerWaitsThenTakesOver(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ra, rb := newRecorder(), newRecorder()
	a, err := events.NewConsumer(e.config(t, ra))
	require.NoError(t, err)
	b, err := events.NewConsumer(e.config(t, rb))
	require.NoError(t, err)
	stopA := run(t, a)
	waitActive(t, a)
	run(t, b)
	e.publish(t, "package_file", 1, 2, 3)
	waitFor(t, waitGuard, "a consumes", func() bool { return ra.distinct() == 3 })
	// b has been polling for the lock all along; give it several rounds.
	require.Never(t, func() bool { return b.Stats().Active }, 100*time.Millisecond, 5*time.Millisecond, "b active while a holds the lock")
	assert.Zero(t, rb.distinct())

	stopA()
	assert.False(t, a.Stats().Active)
	waitActive(t, b)
	e.publish(t, "upload", 4, 5)
	waitFor(t, waitGuard, "b consumes", func() bool { return rb.distinct() == 2 })
	assert.Equal(t, []int64{4, 5}, rb.modelIDs(), "b continues from a's cursor")
	assert.Equal(t, 3, ra.distinct())
}

// TestSkipsUnknownAndMalformed: events the consumer cannot deliver are
// counted, reported to OnSkipped by reason and skipped; the ones around
// them arrive. A batch read again after a handler error is reported once.
func TestSkipsUnknownAndMalformed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := newRecorder()
	var failed atomic.Bool
	rec.before = func(context.Context, []events.Event) error {
		if failed.CompareAndSwap(false, true) {
			return errors.New("first attempt fails")
		}
		return nil
	}
	var mu sync.Mutex
	skippedBy := map[string]int{}
	cfg := e.config(t, rec)
	cfg.OnSkipped = func(reason string, n int) {
		mu.Lock()
		skippedBy[reason] += n
		mu.Unlock()
	}
	c, err := events.NewConsumer(cfg)
	require.NoError(t, err)
	run(t, c)
	waitActive(t, c)
	_, err = e.primary.Exec(`INSERT INTO geo_events (replicable, op, model_id, blob_key, payload) VALUES
		('package_file', 1, 1, NULL, NULL),
		('gone_type', 1, 2, NULL, NULL),
		('package_file', 9, 3, NULL, NULL),
		('package_file', 2, 0, NULL, NULL),
		('package_file', 3, 5, NULL, NULL),
		('package_file', 3, 6, '', NULL),
		('package_file', 3, 7, 'k/7', '{"size": 3}'),
		('upload', 2, 8, 'k/8', NULL)`)
	require.NoError(t, err)
	waitFor(t, waitGuard, "all rows read", func() bool {
		s := c.Stats()
		return s.Consumed+s.SkippedUnknown+s.SkippedMalformed == 8
	})
	s := c.Stats()
	assert.EqualValues(t, 3, s.Consumed)
	assert.EqualValues(t, 1, s.SkippedUnknown)
	assert.EqualValues(t, 4, s.SkippedMalformed)
	assert.Equal(t, []int64{1, 7, 8}, rec.modelIDs())
	got := rec.events()
	assert.JSONEq(t, `{"size": 3}`, string(got[1].Payload))
	assert.Equal(t, "k/7", got[1].BlobKey)
	assert.Nil(t, got[0].Payload)
	assert.True(t, failed.Load(), "the first batch failed once")
	mu.Lock()
	assert.Equal(t, map[string]int{events.SkipUnknownReplicable: 1, events.SkipMalformed: 4}, skippedBy,
		"OnSkipped totals by reason, each skipped row once")
	mu.Unlock()

	e.publish(t, "upload", 9)
	waitFor(t, waitGuard, "the consumer goes on", func() bool { return rec.distinct() == 4 })
}

// TestSurvivesConnectionLoss: every session of the consumer (source reads
// and the lock) is killed, as in a database restart; it goes back to
// waiting, takes the lock again and loses nothing.
func TestSurvivesConnectionLoss(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := newRecorder()
	c, err := events.NewConsumer(e.config(t, rec))
	require.NoError(t, err)
	run(t, c)
	waitActive(t, c)
	e.publish(t, "package_file", 1)
	waitFor(t, waitGuard, "first event", func() bool { return rec.distinct() == 1 })

	for _, db := range []string{dbName(t, e.primary), dbName(t, e.tracking)} {
		_, err := e.primary.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, db)
		require.NoError(t, err)
	}
	e.publish(t, "package_file", 2, 3)
	waitFor(t, waitGuard, "events after the restart", func() bool { return rec.distinct() == 3 })
	waitActive(t, c)
	// Events handled while the lock's session was being killed may come
	// again (their cursor write failed): at least once, never lost.
	assert.Equal(t, []int64{1, 2, 3}, slices.Compact(slices.Sorted(slices.Values(rec.modelIDs()))))
	rec.checkBatchOrder(t)
}

func dbName(t testing.TB, db interface {
	QueryRow(string, ...any) *sql.Row
}) string {
	t.Helper()
	var n string
	require.NoError(t, db.QueryRow(`SELECT current_database()`).Scan(&n))
	return n
}

// TestFetchUsesIndex: the consumer's read is an index scan on (xid, id),
// not a scan and sort of the whole outbox.
func TestFetchUsesIndex(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.primary.ExecContext(ctx, `INSERT INTO geo_events (replicable, op, model_id)
		SELECT 'package_file', 1, g FROM generate_series(1, 20000) g; ANALYZE geo_events`)
	require.NoError(t, err)
	for name, q := range map[string]string{"fetch": events.FetchQuery, "lag": events.LagQuery} {
		var plan []string
		q = strings.NewReplacer("$1", "'1'", "$2", "0", "$3", "1000").Replace(q)
		require.NoError(t, e.primary.SelectContext(ctx, &plan, "EXPLAIN "+q))
		t.Logf("%s plan:\n%s", name, strings.Join(plan, "\n"))
		text := strings.Join(plan, "\n")
		assert.Contains(t, text, "Index Scan using geo_events_xid_id", "%s plan:\n%s", name, text)
		assert.NotRegexp(t, `Seq Scan on geo_events\s`, text, "%s plan:\n%s", name, text)
		assert.NotContains(t, text, "JIT", "%s plan:\n%s", name, text)
	}
}

func TestConsumerConfigValidation(t *testing.T) {
	t.Parallel()
	fakeDB, err := sqlx.Open("postgres", "postgres://127.0.0.1:1/none?sslmode=disable") // never dialled
	require.NoError(t, err)
	defer fakeDB.Close()
	var h events.HandlerFunc = func(context.Context, []events.Event) error { return nil }
	good := func() events.ConsumerConfig {
		return events.ConsumerConfig{Source: fakeDB, Tracking: fakeDB, Handler: h, Known: func(string) bool { return true }}
	}
	for field, mutate := range map[string]func(*events.ConsumerConfig){
		"Source":       func(c *events.ConsumerConfig) { c.Source = nil },
		"Tracking":     func(c *events.ConsumerConfig) { c.Tracking = nil },
		"Handler":      func(c *events.ConsumerConfig) { c.Handler = nil },
		"Known":        func(c *events.ConsumerConfig) { c.Known = nil },
		"Name":         func(c *events.ConsumerConfig) { c.Name = "bad name" },
		"BatchSize":    func(c *events.ConsumerConfig) { c.BatchSize = -1 },
		"PollInterval": func(c *events.ConsumerConfig) { c.PollInterval = 2 * time.Second },
	} {
		cfg := good()
		mutate(&cfg)
		_, err := events.NewConsumer(cfg)
		require.Error(t, err, field)
		assert.True(t, errors.Is(err, events.ErrInvalidConfig), "%s: %v", field, err)
		assert.Contains(t, err.Error(), field)
	}
	c, err := events.NewConsumer(good())
	require.NoError(t, err)
	s := c.Stats()
	assert.False(t, s.Active)
}
