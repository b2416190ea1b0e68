package decisionlog_test

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/decisionlog"
)

// BenchmarkDecideWithDecisionLog (issue 10) shows what the decision log
// costs a decision: compare "collector down" with "collector up" and with
// "no decision log". The collector being down must cost nothing
// measurable: Decide only hands a record to a bounded queue
// (BenchmarkLogHandOff measures that alone). B/op and allocs/op include
// the logger's own goroutine (building and encoding events), which runs
// beside the decisions and competes with them for CPU on a small machine.
//
//	go test -run - -bench DecideWithDecisionLog -benchmem ./pdp/decisionlog
func BenchmarkDecideWithDecisionLog(b *testing.B) {
	for _, mode := range []string{"no decision log", "collector up", "collector down"} {
		b.Run(mode, func(b *testing.B) {
			c := newCollector(b)
			opts := fixtureOptions{}
			if mode != "no decision log" {
				opts.upload = newUpload(b, c, decisionlog.Upload{MinDelay: 10 * time.Millisecond, MaxDelay: 20 * time.Millisecond})
			}
			f := newFixture(b, opts)
			if mode == "no decision log" {
				f.decider = withoutRecorders(b, f)
			}
			if mode == "collector down" {
				c.stop()
			}
			hdr := map[string][]string{"X-Api-Key": {f.key}}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				f.decider.Decide(context.Background(), rawRequest("/orders/1", hdr))
			}
		})
	}
}

// BenchmarkLogHandOff is the decision log's whole cost on the request
// path: handing a record to the queue, or counting it as dropped when the
// queue is full (the collector down long enough to fill everything).
func BenchmarkLogHandOff(b *testing.B) {
	for _, full := range []bool{false, true} {
		b.Run(map[bool]string{false: "logger running", true: "queue full"}[full], func(b *testing.B) {
			l, err := decisionlog.New(decisionlog.Options{Console: discard{}})
			if err != nil {
				b.Fatal(err)
			}
			if !full { // a started logger drains the queue into the console
				l.Start()
				defer l.Stop(context.Background())
			} else {
				l, err = decisionlog.New(decisionlog.Options{Console: discard{}, QueueLen: 1})
				if err != nil {
					b.Fatal(err)
				}
				l.Log(decisionlog.Record{}) // never started: the queue stays full
			}
			rec := decisionlog.Record{Time: time.Now()}
			b.ReportAllocs()
			for b.Loop() {
				l.Log(rec)
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
