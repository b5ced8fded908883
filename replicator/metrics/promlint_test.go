package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/geoframework/geo/replicator"
)

// TestMetricsPassPromlint lints every metric geo defines, the primary's
// and a secondary's on one registry, with Prometheus's own linter
// (promlint: naming, units, _total only on counters, help texts): each
// gauge gets one sample, each counter and histogram one observation, so
// every family is gathered. It also checks that geo_build_info says which
// build runs and that a second registration of it is no conflict.
func TestMetricsPassPromlint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	sec, err := NewSecondary(reg, SecondaryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	db, err := sqlx.Open("postgres", "postgres://nobody@127.0.0.1:1/none?sslmode=disable") // never connects
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pri, err := NewPrimary(reg, PrimaryOptions{DB: db, Types: []string{"item"}})
	if err != nil {
		t.Fatal(err)
	}
	fill := func(s *snapshot) {
		var out []sample
		for _, d := range s.descs {
			labels := labelsOf(d)
			vals := make([]string, len(labels))
			for i := range vals {
				vals[i] = "x"
			}
			out = append(out, sample{d, 1, vals})
		}
		s.set(out)
	}
	fill(sec.snap)
	fill(pri.snap)
	sec.SyncDone(replicator.SyncEvent{Replicable: "item", ModelID: 1, Outcome: replicator.ResultSynced, Bytes: 10, Duration: time.Millisecond})
	sec.SyncDone(replicator.SyncEvent{Replicable: "item", ModelID: 2, Outcome: replicator.ResultSkipped, Duration: time.Millisecond})
	sec.VerifyDone(replicator.VerifyEvent{Replicable: "item", ModelID: 1, OK: true, Duration: time.Millisecond})
	sec.EventsSkipped("malformed", 1)
	sec.LocalMissing("item", 1)
	sec.refreshErr.Inc()
	pri.TransferServed(replicator.TransferEvent{Replicable: "item", ModelID: 1, Bytes: 10})
	pri.refreshErr.Inc()

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var gathered int
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "geo_") {
			gathered++
		}
	}
	want := len(secondaryDescs) + len(primaryDescs) + 8 + 3 + 1 // gauges, the secondary's and the primary's collectors, geo_build_info
	if gathered != want {
		t.Errorf("gathered %d geo_ families, want %d: a metric was not exercised, so it was not linted", gathered, want)
	}
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	var info bool
	for _, f := range families {
		if f.GetName() == "geo_build_info" {
			for _, l := range f.GetMetric()[0].GetLabel() {
				if l.GetName() == "version" && l.GetValue() != "" {
					info = true
				}
			}
		}
	}
	if !info {
		t.Error("geo_build_info has no version label")
	}
}

// labelsOf returns a desc's variable label names, in order.
func labelsOf(d *prometheus.Desc) []string {
	s := d.String()
	i := strings.Index(s, "variableLabels: {")
	if i < 0 {
		return nil
	}
	s = s[i+len("variableLabels: {"):]
	s = s[:strings.Index(s, "}")]
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
