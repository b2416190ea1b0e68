package policy

import (
	"context"
	"errors"
	"strings"
	"testing"
)

const allowAll = `decision := {"allow": true, "status": 200, "reasons": [], "headers": {}}`

// TestActivateRefusesBundleWithCheckErrors: a bundle whose check query
// reports problems is not activated, the error lists them, and the previous
// revision keeps deciding.
func TestActivateRefusesBundleWithCheckErrors(t *testing.T) {
	e := activeEngine(t, Options{}, authzBundle("rev-good", allowAll))

	bad := authzBundle("rev-bad", `decision := {"allow": false, "status": 403, "reasons": [], "headers": {}}

bundle_errors contains "data.tollgate.routes[0]: scopes must be an array of non-empty strings"
bundle_errors contains "data.tollgate.routes[3]: sensitivity must be one of public, internal, sensitive"
`)
	err := e.Activate(context.Background(), bad)
	if !errors.Is(err, ErrBundleCheck) {
		t.Fatalf("Activate = %v, want ErrBundleCheck", err)
	}
	for _, want := range []string{
		`"rev-bad"`,
		DefaultCheckQuery,
		"2 problem(s)",
		"data.tollgate.routes[0]: scopes must be an array of non-empty strings",
		"data.tollgate.routes[3]: sensitivity must be one of public, internal, sensitive",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if e.Revision() != "rev-good" || !e.Ready() {
		t.Errorf("Revision = %q, Ready = %v after a refused bundle", e.Revision(), e.Ready())
	}
	got, err := e.Evaluate(context.Background(), validInput())
	if err != nil || !got.Allow || got.PolicyRevision != "rev-good" {
		t.Errorf("previous policy no longer decides: %#v, %v", got, err)
	}

	// The same engine refuses a first bundle too: it stays not ready.
	fresh := NewEngine(Options{})
	if err := fresh.Activate(context.Background(), bad); !errors.Is(err, ErrBundleCheck) {
		t.Fatalf("Activate on a fresh engine = %v, want ErrBundleCheck", err)
	}
	if fresh.Ready() {
		t.Error("a refused first bundle made the engine ready")
	}
}

// TestActivateCheckResults: which check results accept a bundle and which
// refuse it.
func TestActivateCheckResults(t *testing.T) {
	cases := []struct {
		name   string
		rules  string
		refuse string // "" accepts; else a fragment of the error
	}{
		{"undefined", ``, ""},
		{"empty set", `bundle_errors := set()`, ""},
		{"empty set from a partial rule", `bundle_errors contains "x" if false`, ""},
		{"empty array", `bundle_errors := []`, ""},
		{"array of strings", `bundle_errors := ["b", "a"]`, "2 problem(s): a; b"},
		{"a string", `bundle_errors := "broken"`, "want a set or array of strings"},
		{"a set with a number", `bundle_errors := {"a", 1}`, "want a set or array of strings"},
		{"an object", `bundle_errors := {"a": "b"}`, "want a set or array of strings"},
		{"an evaluation error", `bundle_errors := x if x := 1 / 0`, "divide by zero"},
		{"a conflict", "bundle_errors := [\"a\"]\n\nbundle_errors := [\"b\"] if input.never == 1\n\nbundle_errors := [\"c\"] if true", "conflict"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := activeEngine(t, Options{}, authzBundle("rev-1", allowAll))
			err := e.Activate(context.Background(), authzBundle("rev-2", allowAll+"\n\n"+tc.rules))
			if tc.refuse == "" {
				if err != nil || e.Revision() != "rev-2" {
					t.Fatalf("Activate = %v, revision %q; want rev-2 active", err, e.Revision())
				}
				return
			}
			if !errors.Is(err, ErrBundleCheck) || !strings.Contains(err.Error(), tc.refuse) {
				t.Fatalf("Activate = %v, want ErrBundleCheck mentioning %q", err, tc.refuse)
			}
			if e.Revision() != "rev-1" {
				t.Errorf("Revision = %q after a refused bundle", e.Revision())
			}
		})
	}
}

// TestActivateCheckListsAtMostSome: a bundle with very many problems gets an
// error of bounded length.
func TestActivateCheckListsAtMostSome(t *testing.T) {
	e := NewEngine(Options{})
	err := e.Activate(context.Background(), authzBundle("rev-1", allowAll+`

bundle_errors contains sprintf("problem %03d", [i]) if some i in numbers.range(1, 100)
`))
	if !errors.Is(err, ErrBundleCheck) {
		t.Fatalf("Activate = %v, want ErrBundleCheck", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "100 problem(s)") || !strings.Contains(msg, "problem 020") ||
		strings.Contains(msg, "problem 021") || !strings.Contains(msg, "and 80 more") {
		t.Errorf("error = %q", msg)
	}
}

// TestActivateCheckSeesBundleData: the check runs on the bundle's data, not
// only its rules, and a custom check query replaces the default one.
func TestActivateCheckSeesBundleData(t *testing.T) {
	data := map[string]any{"tollgate": map[string]any{"limits": map[string]any{"max": -1}}}
	src := "package tollgate.authz\n\n" + allowAll + `

problems contains "max must be positive" if data.tollgate.limits.max <= 0
`
	e := NewEngine(Options{CheckQuery: "data.tollgate.authz.problems"})
	err := e.Activate(context.Background(), testBundle("rev-1", data, src))
	if !errors.Is(err, ErrBundleCheck) || !strings.Contains(err.Error(), "max must be positive") {
		t.Fatalf("Activate = %v, want the data problem", err)
	}

	// With the default check query the same bundle is fine: it defines no
	// bundle_errors.
	if err := NewEngine(Options{}).Activate(context.Background(), testBundle("rev-1", data, src)); err != nil {
		t.Fatalf("Activate with the default check = %v", err)
	}
}

func TestInvalidCheckQuery(t *testing.T) {
	for _, q := range []string{"data.tollgate.authz[", "data.a; data.b"} {
		opts := Options{CheckQuery: q}
		if err := opts.Validate(); !errors.Is(err, ErrInvalidQuery) || !strings.Contains(err.Error(), "check query") {
			t.Errorf("Validate(CheckQuery %q) = %v, want ErrInvalidQuery about the check query", q, err)
		}
		e := NewEngine(opts)
		if err := e.Activate(context.Background(), authzBundle("rev-1", allowAll)); !errors.Is(err, ErrInvalidQuery) {
			t.Errorf("Activate with check query %q = %v, want ErrInvalidQuery", q, err)
		}
		if e.Ready() {
			t.Errorf("check query %q: engine ready", q)
		}
	}
}
