package decisionlog

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/open-policy-agent/opa/v1/plugins/rest"
)

// Client posts one gzip-compressed JSON array of events to the collector.
// It returns an error for a transport failure or a non-2xx answer.
type Client interface {
	Post(ctx context.Context, resource string, gzipped []byte) error
}

// RESTClient posts through OPA's REST client, configured from an entry of
// OPA's `services` section (url, headers, credentials, TLS), exactly as
// OPA's decision-log plugin does: POST {url}{resource} with
// Content-Type: application/json and Content-Encoding: gzip.
type RESTClient struct {
	Client rest.Client
}

var _ Client = RESTClient{}

// NewRESTClient builds a RESTClient from a service's configuration in
// OPA's JSON form, e.g. {"url": "https://logs.example.com",
// "credentials": {"bearer": {"token": "…"}}}.
func NewRESTClient(name string, serviceJSON []byte) (RESTClient, error) {
	c, err := rest.New(serviceJSON, nil, rest.Name(name))
	if err != nil {
		return RESTClient{}, fmt.Errorf("decision log: service %q: %w", name, err)
	}
	return RESTClient{Client: c}, nil
}

// Post implements Client.
func (c RESTClient) Post(ctx context.Context, resource string, gzipped []byte) error {
	resp, err := c.Client.
		WithHeader("Content-Type", "application/json").
		WithHeader("Content-Encoding", "gzip").
		WithBytes(gzipped).
		Do(ctx, http.MethodPost, resource)
	if err != nil {
		return fmt.Errorf("decision log upload: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("decision log upload: collector answered %d", resp.StatusCode)
	}
	return nil
}

// gzipOverhead bounds what gzip adds to a payload it cannot compress: its
// header and trailer, and 5 bytes per stored block of at most 64 KiB.
func gzipOverhead(n int64) int64 { return 32 + 5*(n/65535+1) }

// encodeChunk writes events as one gzip-compressed JSON array.
func encodeChunk(events [][]byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write([]byte{'['})
	for i, e := range events {
		if i > 0 {
			_, _ = zw.Write([]byte{','})
		}
		_, _ = zw.Write(e)
	}
	_, _ = zw.Write([]byte{']'})
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// backoff is the delay before retry number n (0-based) after a failed
// upload: exponential from minRetryDelay, capped at max, with full jitter
// in its upper half so that replicas do not retry in step.
func backoff(n int, max time.Duration) time.Duration {
	d := minRetryDelay << min(n, 20)
	if d > max || d <= 0 {
		d = max
	}
	half := d / 2
	return half + rand.N(half+1)
}

// minRetryDelay is OPA's: the first retry comes 100ms after a failure.
const minRetryDelay = 100 * time.Millisecond

// jitter returns a delay uniformly between lo and hi (OPA's reporting
// interval between min_delay_seconds and max_delay_seconds).
func jitter(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + rand.N(hi-lo+1)
}
