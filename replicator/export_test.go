package replicator

import (
	"context"

	"github.com/geoframework/geo/strategy"
)

// VerifyDueNow runs the secondary's verification engine until no row is
// due (for benchmarks). It returns the number of rows it claimed.
func VerifyDueNow(ctx context.Context, s *Secondary) (int, error) {
	total := 0
	for {
		n, err := s.verify.round(ctx)
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
}

// KeyBatcher is the transfer endpoint's key batcher, for tests.
type KeyBatcher struct{ b *keyBatcher }

// NewKeyBatcher returns s's key batcher, nil when s is no
// strategy.BatchKeyer.
func NewKeyBatcher(s strategy.BlobStrategy) *KeyBatcher {
	if b := newKeyBatcher(s); b != nil {
		return &KeyBatcher{b}
	}
	return nil
}

// Key asks record id's key as the endpoint does.
func (k *KeyBatcher) Key(ctx context.Context, id int64) (string, error) { return k.b.key(ctx, id) }

// Waiting is how many requests wait for the next round.
func (k *KeyBatcher) Waiting() int {
	k.b.mu.Lock()
	defer k.b.mu.Unlock()
	return len(k.b.queue)
}

// ReserveSyncCapacity reserves the sync engine's free capacity as it does
// before each claim, and returns how much it reserved and the function
// giving it back (as a claim that got no rows does).
func ReserveSyncCapacity(s *Secondary) (int, func()) {
	limits := s.sync.allocate(nil)
	n := 0
	for _, l := range limits {
		n += l.Limit
	}
	return n, func() { s.sync.unreserve(limits, nil) }
}

// HeartbeatInFlight is the syncs in flight per type that s's heartbeat row
// would carry now.
func HeartbeatInFlight(s *Secondary) map[string]int { return s.hb.process().InFlight }
