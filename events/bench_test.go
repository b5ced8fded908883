package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/geoframework/geo/events"
)

// BenchmarkConsume measures events/s through the consumer (batches of the
// default 1000, a no-op handler): b.N events are committed at once, and
// the clock runs until the consumer has acknowledged them all.
func BenchmarkConsume(b *testing.B) {
	e := newEnv(b)
	var h events.HandlerFunc = func(context.Context, []events.Event) error { return nil }
	cfg := e.config(b, h)
	cfg.Logger = zap.NewNop()
	c, err := events.NewConsumer(cfg)
	require.NoError(b, err)
	run(b, c)
	waitActive(b, c)
	b.ResetTimer()
	_, err = e.primary.Exec(`INSERT INTO geo_events (replicable, op, model_id, blob_key)
		SELECT 'package_file', 1 + g % 3, g, 'k/' || g FROM generate_series(1, $1::int) g`, b.N)
	require.NoError(b, err)
	start := time.Now()
	waitFor(b, 10*time.Minute, "all consumed", func() bool { return c.Stats().Consumed >= int64(b.N) })
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}
