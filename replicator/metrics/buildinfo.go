package metrics

import (
	"errors"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// modulePath is geo's module, looked up in the binary's build info.
const modulePath = "github.com/geoframework/geo"

// buildInfoDesc is geo_build_info: 1, with the geo module's version and
// the Go version as labels, so dashboards can tell which build a site runs.
var buildInfoDesc = desc("geo_build_info",
	"Always 1; the labels say which build of geo this process runs (version: the geo module's version, \"(devel)\" in a development build).",
	[]string{"version", "goversion"})

// geoVersion returns the geo module's version from the binary's build
// info: the main module's when geo is the main module, else its
// dependency entry; "unknown" without build info.
func geoVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if bi.Main.Path == modulePath {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == modulePath {
			if d.Replace != nil && d.Replace.Version != "" {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	return "unknown"
}

// registerBuildInfo registers geo_build_info on reg once: a second
// registration (the primary's and a secondary's metrics on one registry)
// is not an error.
func registerBuildInfo(reg prometheus.Registerer) error {
	err := reg.Register(buildInfo{})
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		return nil
	}
	return err
}

// buildInfo collects geo_build_info.
type buildInfo struct{}

func (buildInfo) Describe(ch chan<- *prometheus.Desc) { ch <- buildInfoDesc }

func (buildInfo) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(buildInfoDesc, prometheus.GaugeValue, 1, geoVersion(), runtime.Version())
}
