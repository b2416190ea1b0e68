package telemetry

import "github.com/prometheus/client_golang/prometheus"

// CacheStats reads one cache's counts: the lookups it answered (hits),
// those it could not (misses: the work was done), and the entries it
// holds.
type CacheStats func() (hits, misses uint64, entries int)

// NewCacheCollector exposes caches by name (token, decision) as
// tollgate_cache_requests_total{cache,result} and
// tollgate_cache_entries{cache}, read when scraped: nothing on the request
// path but the caches' own striped counters.
func NewCacheCollector(caches map[string]CacheStats) prometheus.Collector {
	return cacheCollector{caches: caches}
}

var (
	cacheRequestsDesc = prometheus.NewDesc("tollgate_cache_requests_total",
		"Lookups in a cache (token: verified tokens; decision: decisions of the active policy), by result: hit, or miss (the token was verified, the policy evaluated).",
		[]string{"cache", "result"}, nil)
	cacheEntriesDesc = prometheus.NewDesc("tollgate_cache_entries",
		"Entries a cache holds (an estimate while it evicts); the decision cache is the active revision's.",
		[]string{"cache"}, nil)
)

type cacheCollector struct{ caches map[string]CacheStats }

func (cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cacheRequestsDesc
	ch <- cacheEntriesDesc
}

func (c cacheCollector) Collect(ch chan<- prometheus.Metric) {
	for name, stats := range c.caches {
		hits, misses, entries := stats()
		ch <- prometheus.MustNewConstMetric(cacheRequestsDesc, prometheus.CounterValue, float64(hits), name, "hit")
		ch <- prometheus.MustNewConstMetric(cacheRequestsDesc, prometheus.CounterValue, float64(misses), name, "miss")
		ch <- prometheus.MustNewConstMetric(cacheEntriesDesc, prometheus.GaugeValue, float64(entries), name)
	}
}
