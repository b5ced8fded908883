package metrics_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/replicator/metrics"
)

// TestEventsSkippedAreCounted: outbox rows a secondary's consumer cannot
// deliver, for a type this secondary does not register and malformed
// ones, reach geo_events_skipped_total by reason, through the consumer's
// OnSkipped as replicator.NewSecondary wires it to the Observer.
func TestEventsSkippedAreCounted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w, _ := newWorld(t)
	reg := prometheus.NewRegistry()
	m, err := metrics.NewSecondary(reg, metrics.SecondaryOptions{Interval: time.Hour})
	require.NoError(t, err)
	cfg := w.SecondaryConfig(&testtype.Type{TypeName: "item", Table: "items", DB: w.PrimaryDB})
	cfg.Observer = m
	r := w.Start(cfg)
	// A consumer starts at the end of the log: write the rows after it
	// saved its start.
	geotest.WaitFor(t, time.Minute, "the event consumer's start saved", func() (bool, string) {
		cursors, err := r.Store().EventCursors(ctx)
		if err != nil {
			return false, err.Error()
		}
		return len(cursors) > 0, fmt.Sprintf("%d cursors", len(cursors))
	})
	_, err = w.PrimaryDB.ExecContext(ctx, `INSERT INTO geo_events (replicable, op, model_id, blob_key) VALUES
		('not_here', 1, 1, NULL),
		('not_here', 3, 2, 'k/2'),
		('item', 9, 3, NULL),
		('item', 3, 4, NULL),
		('item', 1, 0, NULL)`)
	require.NoError(t, err)
	const unknown, malformed = "geo_events_skipped_total{reason=unknown_replicable}", "geo_events_skipped_total{reason=malformed}"
	geotest.WaitFor(t, time.Minute, "2 unknown and 3 malformed events counted", func() (bool, string) {
		got := scrape(t, reg)
		return got[unknown] == 2 && got[malformed] == 3, fmt.Sprintf("unknown %v, malformed %v", got[unknown], got[malformed])
	})
}
