package geotest_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/geoframework/geo/geotest"
)

// TestEventuallyIsTiedToProgress: a wait whose condition keeps changing
// its explanation (work progressing, slowly: a loaded machine) is not
// failed at its stall timeout, however long it takes up to the hang
// guard; a condition that shows no change fails after the stall timeout;
// one that changes for ever fails at the hang guard. (Eventually was a
// wall-clock deadline: the slow but progressing wait failed.)
func TestEventuallyIsTiedToProgress(t *testing.T) {
	t.Parallel()
	const stall = 100 * time.Millisecond

	t.Run("progressing", func(t *testing.T) {
		t.Parallel()
		start, polls := time.Now(), 0
		err := geotest.Eventually(stall, func() (bool, string) {
			polls++
			return time.Since(start) > 5*stall, fmt.Sprintf("%d polls", polls)
		})
		if err != nil {
			t.Fatalf("Eventually with a condition progressing for 5 stall timeouts: got %v, want nil", err)
		}
	})

	t.Run("stalled", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		err := geotest.Eventually(stall, func() (bool, string) { return false, "state pending" })
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), "no progress for") || !strings.Contains(err.Error(), "state pending") {
			t.Fatalf("Eventually with an unchanging condition: got %v, want a \"no progress for\" error with its explanation", err)
		}
		if took < stall {
			t.Fatalf("Eventually with an unchanging condition gave up after %v, want at least the %v stall timeout", took, stall)
		}
	})

	t.Run("livelock", func(t *testing.T) {
		t.Parallel()
		start, polls := time.Now(), 0
		err := geotest.Eventually(stall, func() (bool, string) {
			polls++
			return false, fmt.Sprintf("retry %d", polls)
		})
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), "although it kept changing") {
			t.Fatalf("Eventually with a condition changing for ever: got %v, want the hang guard's error", err)
		}
		if took < geotest.WaitHangFactor*stall {
			t.Fatalf("Eventually with a condition changing for ever gave up after %v, want at least %v", took, geotest.WaitHangFactor*stall)
		}
	})
}
