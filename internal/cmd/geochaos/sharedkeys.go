package main

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/dirblob"
)

// sharedPoolSizes are the sizes of the shared-keys scenario's payloads,
// one per pool entry: small ones sync at once, the large ones keep
// transfers in flight while other records move to and from their keys.
var sharedPoolSizes = [...]int{512, 4 << 10, 16 << 10, 64 << 10, 200 << 10, 600 << 10, 1 << 20, 3 << 10}

// sharedPool is a small set of payloads every item's bytes are drawn
// from, so content-addressed keys collide all the time.
type sharedPool [len(sharedPoolSizes)][]byte

func newSharedPool(seed uint64) *sharedPool {
	var p sharedPool
	r := mrand.New(mrand.NewPCG(seed, 19))
	for i, n := range sharedPoolSizes {
		var s [32]byte
		for j := range s {
			s[j] = byte(r.Uint32())
		}
		p[i] = make([]byte, n)
		mrand.NewChaCha8(s).Read(p[i])
	}
	return &p
}

// pick returns a payload, skewed: entry i with probability 2^-(i+1) (the
// last two share the tail). The common ones are named by many records at
// once; the rare ones are often named by none, and come back.
func (p *sharedPool) pick(r *mrand.Rand, _ bool) []byte {
	i := min(bits.TrailingZeros32(r.Uint32()|1<<31), len(p)-1)
	return p[i]
}

// runSharedKeys: items are content-addressed (keys from the SHA-256 of
// their bytes, as Git LFS objects at their oid) and their bytes come from
// a pool of eight payloads, so many records name one key at any time,
// records move between keys on every update, and a rare payload's key is
// left by its last record (its bytes removed) and comes back. The
// secondary is a separate process killed with SIGKILL at random moments
// while the primary creates, updates and deletes. All along, every synced
// row's file is checked to exist (a lost shared file can be repaired
// later, which would hide the loss); at the end, the exact comparison.
func runSharedKeys(ctx context.Context, o options) error {
	const name = "shared-keys"
	n := o.size(o.n, 200, 3000)
	kills := o.size(o.kills, 3, 10)
	seedN := n / 2
	e, err := newEnv(ctx, o, envConfig{})
	if err != nil {
		return err
	}
	defer e.close()
	e.App.ContentAddressed = true
	w := newWorkload(e, o.seed)
	w.contents = newSharedPool(o.seed).pick
	o.logf(name, "primary: seeding %d items from a pool of %d payloads", seedN, len(sharedPoolSizes))
	if err := w.seed(ctx, seedN, false); err != nil {
		return err
	}
	p, err := newProcs(e, o.verbose)
	if err != nil {
		return err
	}
	cur, err := p.start("shared")
	if err != nil {
		return err
	}
	defer func() { cur.kill() }()
	watch, stopWatch := startSharedWatch(ctx, e)
	defer stopWatch()

	stopChurn := make(chan struct{})
	churnErr := make(chan error, 1)
	go func() { churnErr <- w.churn(ctx, stopChurn, 3*time.Millisecond, false) }()
	r := mrand.New(mrand.NewPCG(o.seed, 23))
	for i := 0; i < kills && ctx.Err() == nil; i++ {
		time.Sleep(time.Duration(300+r.IntN(2200)) * time.Millisecond)
		if exited, err := cur.exited(); exited {
			return fmt.Errorf("secondary process exited by itself: %v (log %s)", err, cur.log)
		}
		cur.kill()
		if cur, err = p.start("shared"); err != nil {
			return err
		}
	}
	for !w.createdAtLeast(n-seedN) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	close(stopChurn)
	if err := <-churnErr; err != nil {
		return err
	}
	var keys, records int
	if err := e.PrimaryDB.QueryRowContext(ctx, `SELECT count(DISTINCT blob_key), count(*) FROM `+typeTable).Scan(&keys, &records); err != nil {
		return err
	}
	o.logf(name, "%d SIGKILLs done; application %s; %d records name %d distinct keys; waiting for convergence", kills, w, records, keys)
	d, took, cerr := e.waitConverged(ctx, o.timeout)
	if err := stopWatch(); err != nil {
		return err
	}
	o.logf(name, "synced rows checked for their file on the way: %d looks, %d synced rows found without their file", watch.looks, len(watch.lost))
	for _, l := range watch.lost[:min(5, len(watch.lost))] {
		o.logf(name, "  e.g. %s", l)
	}
	if cerr != nil {
		summary(o.out, name, d, took)
		return cerr
	}
	if err := cur.stop(); err != nil {
		return err
	}
	if d, err = e.compare(ctx); err != nil {
		return err
	}
	serr := summary(o.out, name, d, took)
	if len(watch.lost) > 0 {
		return errors.Join(serr, fmt.Errorf("%d synced rows were seen without their file (at most %d counted), first %s", len(watch.lost), sharedWatchMaxLost, watch.lost[0]))
	}
	return serr
}

// sharedWatchSettle is how long after a synced row was seen without its
// file the watch reads the row again: a row a deleted event or the
// consistency pass is removing still reads as synced until that
// transaction (which removes the bytes first) commits, and is gone by
// then. A row still there, unchanged (same generation, same last sync),
// was synced at its key all along while the file was absent: lost, even
// if another record's sync has written the bytes back since.
const sharedWatchSettle = 2 * time.Second

// sharedWatchMaxLost bounds the losses the watch records: past it, it
// has made its point.
const sharedWatchMaxLost = 100

// sharedWatch polls the secondary: every key a synced row records must
// have a file. Keys are few (a pool of payloads), so each look stats
// every distinct key once, whatever the number of rows.
type sharedWatch struct {
	e        *env
	looks    int
	lost     []string
	suspects map[int64]watchedRow // synced rows seen without their file, by record
	seen     map[string]bool      // record@key already counted
}

// watchedRow is a synced registry row as the watch read it.
type watchedRow struct {
	id, seq  int64
	key      string
	syncedAt time.Time
	at       time.Time // when it was seen without its file
	sharedBy int       // synced rows naming the key at that look
}

func startSharedWatch(ctx context.Context, e *env) (*sharedWatch, func() error) {
	s := &sharedWatch{e: e, suspects: map[int64]watchedRow{}, seen: map[string]bool{}}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.run(wctx) }()
	var once sync.Once
	var err error
	return s, func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
}

// run looks every 100ms until ctx ends, then settles the last suspects
// (with a deadline of its own).
func (s *sharedWatch) run(ctx context.Context) error {
	sec, err := dirblob.Open(s.e.SecondaryRoot)
	if err != nil {
		return err
	}
	defer sec.Close()
	for ctx.Err() == nil {
		if err := s.look(ctx, sec); err != nil && ctx.Err() == nil {
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	last, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if len(s.suspects) > 0 {
		time.Sleep(sharedWatchSettle)
	}
	return s.settle(last, time.Now())
}

func (s *sharedWatch) look(ctx context.Context, sec *blob.Bucket) error {
	if err := s.settle(ctx, time.Now().Add(-sharedWatchSettle)); err != nil {
		return err
	}
	rows, err := s.e.TrackingDB.QueryContext(ctx, `SELECT model_id, seq, blob_key, last_synced_at
FROM geo_registry WHERE replicable = $1 AND state = 2`, typeName)
	if err != nil {
		return err
	}
	byKey := map[string][]watchedRow{}
	for rows.Next() {
		var r watchedRow
		if err := rows.Scan(&r.id, &r.seq, &r.key, &r.syncedAt); err != nil {
			rows.Close()
			return err
		}
		byKey[r.key] = append(byKey[r.key], r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	s.looks++
	now := time.Now()
	for key, list := range byKey {
		if _, err := sec.Stat(ctx, key); !errors.Is(err, blob.ErrNotExist) {
			continue
		}
		for _, r := range list {
			if _, ok := s.suspects[r.id]; !ok && !s.seen[fmt.Sprintf("%d@%s", r.id, r.key)] {
				r.at, r.sharedBy = now, len(list)
				s.suspects[r.id] = r
			}
		}
	}
	return nil
}

// settle reads again the rows seen without their file before cutoff:
// one still there unchanged is lost.
func (s *sharedWatch) settle(ctx context.Context, cutoff time.Time) error {
	for id, r := range s.suspects {
		if r.at.After(cutoff) {
			continue
		}
		delete(s.suspects, id)
		var n int
		err := s.e.TrackingDB.GetContext(ctx, &n, `SELECT count(*) FROM geo_registry
WHERE replicable = $1 AND model_id = $2 AND state = 2 AND seq = $3 AND blob_key = $4 AND last_synced_at = $5`,
			typeName, r.id, r.seq, r.key, r.syncedAt)
		if err != nil {
			return err
		}
		if n == 1 && len(s.lost) < sharedWatchMaxLost {
			s.seen[fmt.Sprintf("%d@%s", r.id, r.key)] = true
			s.lost = append(s.lost, fmt.Sprintf("%d: synced at %s (a key %d synced rows named) while no file was there", r.id, r.key, r.sharedBy))
		}
	}
	return nil
}
