package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// decisionCacheCounts reads how many decisions Tollgate's decision cache
// answered (hits) and how many the policy evaluated (misses) so far, from
// tollgate_cache_requests_total{cache="decision"} on its /metrics.
func decisionCacheCounts(ctx context.Context, client *http.Client, url string) (hits, misses float64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("tollgate metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("tollgate metrics: HTTP %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return 0, 0, fmt.Errorf("tollgate metrics: %w", err)
	}
	mf := families["tollgate_cache_requests_total"]
	if mf == nil {
		return 0, 0, errors.New("tollgate metrics: no tollgate_cache_requests_total")
	}
	found := 0
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["cache"] != "decision" {
			continue
		}
		switch labels["result"] {
		case "hit":
			hits, found = m.GetCounter().GetValue(), found+1
		case "miss":
			misses, found = m.GetCounter().GetValue(), found+1
		}
	}
	if found != 2 {
		return 0, 0, errors.New(`tollgate metrics: tollgate_cache_requests_total{cache="decision"} lacks its hit or miss series`)
	}
	return hits, misses, nil
}
