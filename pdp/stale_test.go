package pdp_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/request"
)

func TestStalePolicyFailsClosed(t *testing.T) {
	engine := newEngine(t, echoPolicy)
	var stale atomic.Bool
	d, err := pdp.New(pdp.Config{Engine: engine, PolicyStale: func() error {
		if stale.Load() {
			return errors.New("stale")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	raw := request.Raw{Method: "GET", Target: "/public/x", Host: "api.example.com", Scheme: "https"}
	fresh := d.Decide(context.Background(), raw)
	stale.Store(true)
	closed := d.Decide(context.Background(), raw)
	stale.Store(false)
	again := d.Decide(context.Background(), raw)

	if closed.Allow || closed.Status != 500 || len(closed.Reasons) != 1 || closed.Reasons[0] != "policy_error" {
		t.Errorf("stale: %+v, want a 500 policy_error deny", closed)
	}
	if closed.PolicyRevision != engine.Revision() || closed.ID == "" {
		t.Errorf("stale decision names revision %q and id %q", closed.PolicyRevision, closed.ID)
	}
	if fresh.Status == 500 || again.Status == 500 || fresh.Allow != again.Allow {
		t.Errorf("fresh decisions: %+v then %+v, want the policy's answer", fresh, again)
	}
}
