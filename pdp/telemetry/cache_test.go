package telemetry

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCacheCollector(t *testing.T) {
	c := NewCacheCollector(map[string]CacheStats{
		"token":    func() (uint64, uint64, int) { return 7, 3, 5 },
		"decision": func() (uint64, uint64, int) { return 40, 2, 2 },
	})
	want := `
# HELP tollgate_cache_entries Entries a cache holds (an estimate while it evicts); the decision cache is the active revision's.
# TYPE tollgate_cache_entries gauge
tollgate_cache_entries{cache="decision"} 2
tollgate_cache_entries{cache="token"} 5
# HELP tollgate_cache_requests_total Lookups in a cache (token: verified tokens; decision: decisions of the active policy), by result: hit, or miss (the token was verified, the policy evaluated).
# TYPE tollgate_cache_requests_total counter
tollgate_cache_requests_total{cache="decision",result="hit"} 40
tollgate_cache_requests_total{cache="decision",result="miss"} 2
tollgate_cache_requests_total{cache="token",result="hit"} 7
tollgate_cache_requests_total{cache="token",result="miss"} 3
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
