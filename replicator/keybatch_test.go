package replicator_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/strategy"
)

// heldKeys holds its first BlobKeys call until released and records the
// ids of every call; BlobKey calls are counted. panics makes BlobKeys
// panic instead.
type heldKeys struct {
	*countingKeys
	entered chan struct{} // closed when the first BlobKeys call starts
	release chan struct{}
	panics  bool

	mu    sync.Mutex
	calls [][]int64
}

func (h *heldKeys) BlobKeys(ctx context.Context, ids []int64) (map[int64]string, error) {
	h.mu.Lock()
	h.calls = append(h.calls, slices.Clone(ids))
	first := len(h.calls) == 1
	h.mu.Unlock()
	if first {
		close(h.entered)
		<-h.release
	}
	if h.panics {
		panic("adapter bug")
	}
	return h.countingKeys.BlobKeys(ctx, ids)
}

// TestEndpointKeyLookupsShareRounds: the transfer endpoint's key lookups
// of a strategy.BatchKeyer type that arrive while a BlobKeys round runs
// are answered together by the next round (one query), each with the key
// BlobKey gives now: a key changed before the request arrived is the new
// one, a deleted record is ErrNotFound (asked of BlobKey, since BlobKeys
// leaves it out), a repeated id is asked once. A BlobKeys that panics
// makes each request ask BlobKey instead.
func TestEndpointKeyLookupsShareRounds(t *testing.T) {
	t.Parallel()
	for _, panics := range []bool{false, true} {
		t.Run(fmt.Sprintf("panics=%v", panics), func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			ids := f.createItems(t, 12, 100)
			gone := ids[11]
			require.NoError(t, f.app.Delete(ctx, gone, false))
			h := &heldKeys{countingKeys: &countingKeys{Type: f.secondaryItems()}, entered: make(chan struct{}), release: make(chan struct{}), panics: panics}
			kb := replicator.NewKeyBatcher(h)
			require.NotNil(t, kb)
			require.Nil(t, replicator.NewKeyBatcher(singleKeys{h}), "no batcher without BatchKeyer")

			type answer struct {
				id  int64
				key string
				err error
			}
			answers := make(chan answer, 16)
			ask := func(id int64) {
				key, err := kb.Key(ctx, id)
				answers <- answer{id, key, err}
			}
			go ask(ids[0])
			select {
			case <-h.entered:
			case <-time.After(hangGuard):
				t.Fatal("the first round did not start")
			}
			// Changed before the requests below arrive: they must see it.
			require.NoError(t, f.app.Update(ctx, ids[3], payload(3, 200)))
			asked := append(slices.Clone(ids[1:11]), gone, ids[1])
			for _, id := range asked {
				go ask(id)
			}
			require.Eventually(t, func() bool { return kb.Waiting() == len(asked) }, hangGuard, time.Millisecond,
				"the requests queue behind the running round")
			close(h.release)

			for range len(asked) + 1 {
				var a answer
				select {
				case a = <-answers:
				case <-time.After(hangGuard):
					t.Fatal("a request was not answered")
				}
				want, werr := f.items.BlobKey(ctx, a.id)
				if a.id == gone {
					require.ErrorIs(t, a.err, strategy.ErrNotFound, "deleted record")
					require.ErrorIs(t, werr, strategy.ErrNotFound)
					continue
				}
				require.NoError(t, a.err, "id %d", a.id)
				require.Equal(t, want, a.key, "id %d", a.id)
				if a.id == ids[3] {
					require.True(t, strings.HasSuffix(a.key, "-v2"), "the key changed before the request: %s", a.key)
				}
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			require.Len(t, h.calls, 2, "one round for the first request, one for all that waited")
			second := slices.Clone(h.calls[1])
			slices.Sort(second)
			wantIDs := append(slices.Clone(ids[1:11]), gone)
			slices.Sort(wantIDs)
			require.Equal(t, wantIDs, second, "the waiting requests' ids, each once")
			if panics {
				require.EqualValues(t, len(asked)+1, h.one.Load(), "every request asks BlobKey after the rounds panicked")
			} else {
				require.EqualValues(t, 1, h.one.Load(), "only the id BlobKeys left out is asked of BlobKey")
			}
		})
	}
}
