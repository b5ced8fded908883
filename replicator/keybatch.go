package replicator

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/geoframework/geo/strategy"
)

// keyRoundMax is the most ids one BlobKeys round asks (the interface
// promises "at most a few hundred").
const keyRoundMax = 256

// keyRoundTimeout bounds one BlobKeys round. A round answers many
// requests, so it runs under none of their contexts: a request whose
// context ends stops waiting, and the round goes on for the others.
const keyRoundTimeout = 10 * time.Second

// keyBatcher answers the transfer endpoint's key lookups of one type that
// implements strategy.BatchKeyer, coalescing them into BlobKeys calls:
// a lookup asked while a round's query runs joins the next round, so
// under load one query answers the requests that arrived meanwhile (a
// secondary starts a claimed batch's transfers together), and a lone
// request's round starts at once. Each answer comes from a query that
// started after the request arrived, as its own BlobKey would. An id the
// round left out, and every id of a failed round, is asked of BlobKey,
// whose answer (a key, ErrNotFound, an error) is then the request's.
//
// The endpoint asked BlobKey once per blob it served: for small blobs a
// database round trip per blob on the primary (geo's performance notes,
// https://github.com/geoframework/geo/blob/main/docs/performance.md).
type keyBatcher struct {
	s  strategy.BlobStrategy
	bk strategy.BatchKeyer

	mu      sync.Mutex
	queue   []*keyWait
	running bool
}

// keyWait is one request waiting for its round.
type keyWait struct {
	id   int64
	done chan struct{}
	key  string
	ok   bool // the round gave a key
}

func newKeyBatcher(s strategy.BlobStrategy) *keyBatcher {
	bk, ok := s.(strategy.BatchKeyer)
	if !ok {
		return nil
	}
	return &keyBatcher{s: s, bk: bk}
}

// key returns record id's key, in a round shared with concurrent lookups.
func (b *keyBatcher) key(ctx context.Context, id int64) (string, error) {
	w := &keyWait{id: id, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, w)
	if !b.running {
		b.running = true
		go b.rounds()
	}
	b.mu.Unlock()
	select {
	case <-w.done:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if w.ok {
		return w.key, nil
	}
	return b.s.BlobKey(ctx, id)
}

// rounds runs rounds until no request waits.
func (b *keyBatcher) rounds() {
	for {
		b.mu.Lock()
		n := min(len(b.queue), keyRoundMax)
		if n == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		ws := b.queue[:n:n]
		b.queue = b.queue[n:]
		b.mu.Unlock()
		b.round(ws)
	}
}

// round asks BlobKeys the keys of ws (distinct ids) and answers them.
func (b *keyBatcher) round(ws []*keyWait) {
	ids := make([]int64, 0, len(ws))
	seen := make(map[int64]bool, len(ws))
	for _, w := range ws {
		if !seen[w.id] {
			seen[w.id] = true
			ids = append(ids, w.id)
		}
	}
	keys, err := b.blobKeys(ids)
	for _, w := range ws {
		if err == nil {
			w.key, w.ok = keys[w.id]
		}
		close(w.done)
	}
}

// blobKeys calls BlobKeys, turning a panic of the adopter's code (which
// would otherwise end the process from this goroutine) into an error: the
// requests then ask BlobKey each, in their own goroutines.
func (b *keyBatcher) blobKeys(ids []int64) (keys map[int64]string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("strategy %s: BlobKeys panicked: %v", b.s.Name(), r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), keyRoundTimeout)
	defer cancel()
	return b.bk.BlobKeys(ctx, ids)
}
