package telemetry

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BundleTimes are the times of one bundle that tell whether it is stale.
type BundleTimes struct {
	Name string
	// ActivatedAt is when the active revision was activated.
	ActivatedAt time.Time
	// CheckedAt is when the bundle's source last confirmed the active
	// revision.
	CheckedAt time.Time
}

// NewBundleCollector exports, per bundle, when its active revision was
// activated and when its source last confirmed it:
// tollgate_bundle_activated_timestamp_seconds{bundle} and
// tollgate_bundle_checked_timestamp_seconds{bundle} (Unix seconds; absent
// before the first), so that `time() - …` alerts on a stale bundle.
func NewBundleCollector(times func() []BundleTimes) prometheus.Collector {
	return bundleCollector{times: times}
}

var (
	bundleActivatedDesc = prometheus.NewDesc("tollgate_bundle_activated_timestamp_seconds",
		"When the active revision of the bundle was activated (Unix seconds).", []string{"bundle"}, nil)
	bundleCheckedDesc = prometheus.NewDesc("tollgate_bundle_checked_timestamp_seconds",
		"When the bundle's source last confirmed the active revision (Unix seconds).", []string{"bundle"}, nil)
)

type bundleCollector struct{ times func() []BundleTimes }

func (bundleCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- bundleActivatedDesc
	ch <- bundleCheckedDesc
}

func (c bundleCollector) Collect(ch chan<- prometheus.Metric) {
	for _, b := range c.times() {
		if !b.ActivatedAt.IsZero() {
			ch <- prometheus.MustNewConstMetric(bundleActivatedDesc, prometheus.GaugeValue, float64(b.ActivatedAt.UnixNano())/1e9, b.Name)
		}
		if !b.CheckedAt.IsZero() {
			ch <- prometheus.MustNewConstMetric(bundleCheckedDesc, prometheus.GaugeValue, float64(b.CheckedAt.UnixNano())/1e9, b.Name)
		}
	}
}
