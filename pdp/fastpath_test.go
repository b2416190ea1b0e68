package pdp_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/request"
)

// peeker answers from a fixed outcome when known, and records how
// Authenticate was called otherwise.
type peeker struct {
	known       bool
	out         authn.Outcome
	calls       atomic.Int64
	hadDeadline atomic.Bool
}

func (p *peeker) Peek(credential.Credential) (authn.Outcome, bool) { return p.out, p.known }

func (p *peeker) Authenticate(ctx context.Context, _ credential.Credential) (authn.Outcome, error) {
	p.calls.Add(1)
	_, ok := ctx.Deadline()
	p.hadDeadline.Store(ok)
	return p.out, nil
}

// slow is an authenticator without Peek.
type slow struct {
	out         authn.Outcome
	calls       atomic.Int64
	hadDeadline atomic.Bool
}

func (s *slow) Authenticate(ctx context.Context, _ credential.Credential) (authn.Outcome, error) {
	s.calls.Add(1)
	_, ok := ctx.Deadline()
	s.hadDeadline.Store(ok)
	return s.out, nil
}

// TestPeekersAnswerWithoutAuthenticate checks the fast path: an
// authenticator that can answer at once is asked with Peek, and Authenticate
// (under the decision's deadline) runs only from the first one that cannot.
func TestPeekersAnswerWithoutAuthenticate(t *testing.T) {
	alice := authn.Accept(&authn.Identity{Kind: authn.KindUser, Subject: "alice"})
	notMine := authn.Outcome{Result: authn.NotApplicable}
	tests := []struct {
		name       string
		first      *peeker
		second     *slow
		wantReason string // the credential status seen by the policy, as echoPolicy reports it
		wantSlow   bool   // the second authenticator was asked
		wantFirst  bool   // the first one's Authenticate was called
	}{
		{"a hit answers at once", &peeker{known: true, out: alice}, &slow{out: authn.Reject(authn.ReasonExpired)}, "valid", false, false},
		{"not mine passes on to the next", &peeker{known: true, out: notMine}, &slow{out: authn.Reject(authn.ReasonExpired)}, "invalid", true, false},
		{"a miss falls back to Authenticate", &peeker{known: false, out: alice}, &slow{out: authn.Reject(authn.ReasonExpired)}, "valid", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := pdp.New(pdp.Config{Engine: newEngine(t, echoPolicy), Authenticators: []authn.Authenticator{tt.first, tt.second}})
			if err != nil {
				t.Fatal(err)
			}
			dec := d.Decide(context.Background(), request.Raw{Method: "GET", Target: "/x", Headers: map[string][]string{"Authorization": {"Bearer t"}}})
			if len(dec.Reasons) == 0 || dec.Reasons[0] != tt.wantReason {
				t.Errorf("reasons %v, want status %q first", dec.Reasons, tt.wantReason)
			}
			if got := tt.second.calls.Load() > 0; got != tt.wantSlow {
				t.Errorf("second authenticator asked: %v, want %v", got, tt.wantSlow)
			}
			if tt.wantSlow && !tt.second.hadDeadline.Load() {
				t.Error("Authenticate ran without the decision's deadline")
			}
			if got := tt.first.calls.Load() > 0; got != tt.wantFirst {
				t.Errorf("first authenticator's Authenticate called: %v, want %v", got, tt.wantFirst)
			}
			if tt.wantFirst && !tt.first.hadDeadline.Load() {
				t.Error("Authenticate ran without the decision's deadline")
			}
		})
	}
}
