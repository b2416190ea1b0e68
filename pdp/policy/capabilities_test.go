package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// excludedBuiltins are the built-ins OPA implements that the pinned
// capabilities leave out, each with a call that type-checks.
var excludedBuiltins = map[string]string{
	"http.send":              `http.send({"method": "GET", "url": "http://127.0.0.1:1/"})`,
	"net.lookup_ip_addr":     `net.lookup_ip_addr("localhost")`,
	"opa.runtime":            `opa.runtime().env`,
	"json.match_schema":      `json.match_schema({}, {"$ref": "http://127.0.0.1:1/schema.json"})`,
	"json.verify_schema":     `json.verify_schema({"$ref": "http://127.0.0.1:1/schema.json"})`,
	"providers.aws.sign_req": `providers.aws.sign_req({}, {}, 0)`,
	"rand.intn":              `rand.intn("seed", 10)`,
	"uuid.rfc4122":           `uuid.rfc4122("seed")`,
	"io.jwt.encode_sign":     `io.jwt.encode_sign({"alg": "HS256"}, {}, {"kty": "oct", "k": "AA"})`,
	"io.jwt.encode_sign_raw": `io.jwt.encode_sign_raw("{\"alg\":\"HS256\"}", "{}", "{\"kty\":\"oct\",\"k\":\"AA\"}")`,
}

const allowDecision = `{"allow": true, "status": 200, "reasons": [], "headers": {}}`

// mustRefuse activates b on an engine whose active bundle is good and
// checks that it is refused with ErrBuiltinNotAllowed naming each of names,
// and that the good bundle still decides.
func mustRefuse(t *testing.T, opts Options, src string, names ...string) {
	t.Helper()
	e := activeEngine(t, opts, authzBundle("rev-good", "decision := "+allowDecision))
	err := e.Activate(context.Background(), authzBundle("rev-bad", src))
	if err == nil {
		t.Fatal("Activate succeeded")
	}
	if !errors.Is(err, ErrBuiltinNotAllowed) {
		t.Fatalf("error %v does not wrap ErrBuiltinNotAllowed", err)
	}
	var astErrs ast.Errors
	if !errors.As(err, &astErrs) {
		t.Errorf("error %v does not wrap OPA's ast.Errors", err)
	}
	for _, n := range names {
		if !strings.Contains(err.Error(), n+" (") {
			t.Errorf("error %q does not name %s with its location", err, n)
		}
	}
	if d, err := e.Evaluate(context.Background(), validInput()); err != nil || !d.Allow || d.PolicyRevision != "rev-good" {
		t.Errorf("previous bundle no longer decides: %+v, %v", d, err)
	}
}

// TestExcludedBuiltinsRefused: a bundle that calls a built-in reaching the
// network, the environment or randomness never becomes active, wherever
// the call sits.
func TestExcludedBuiltinsRefused(t *testing.T) {
	for name, call := range excludedBuiltins {
		t.Run(name+"/in the decision", func(t *testing.T) {
			mustRefuse(t, Options{}, "decision := "+allowDecision+" if { x := "+call+"; x == x }", name)
		})
		t.Run(name+"/in a helper function", func(t *testing.T) {
			mustRefuse(t, Options{}, "decision := "+allowDecision+" if { _f(1) }\n\n_f(_) if { _ = "+call+" }", name)
		})
		t.Run(name+"/in a comprehension", func(t *testing.T) {
			mustRefuse(t, Options{}, "decision := "+allowDecision+" if { count([y | some i in [1]; y := "+call+"]) >= 0 }", name)
		})
	}
	t.Run("two at once", func(t *testing.T) {
		mustRefuse(t, Options{}, "decision := "+allowDecision+" if {\n\tx := "+excludedBuiltins["http.send"]+"\n\ty := "+excludedBuiltins["opa.runtime"]+"\n\tx != y\n}", "http.send", "opa.runtime")
	})
}

// TestBuiltinsNotPinnedRefused: every built-in this OPA implements but the
// pinned document does not list is refused, as a built-in a future OPA adds
// will be, and the list of those is exactly the documented exclusions.
func TestBuiltinsNotPinnedRefused(t *testing.T) {
	pinned, err := PinnedCapabilities()
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for _, b := range ast.CapabilitiesForThisVersion().Builtins {
		if pinned.ContainsBuiltin(b.Name) || b.Infix != "" || b.Decl == nil || strings.HasPrefix(b.Name, "internal.") {
			continue
		}
		missing = append(missing, b.Name)
		args := make([]string, len(b.Decl.FuncArgs().Args))
		for i := range args {
			args[i] = "input.x"
		}
		call := fmt.Sprintf("%s(%s)", b.Name, strings.Join(args, ", "))
		t.Run(b.Name, func(t *testing.T) {
			mustRefuse(t, Options{}, "decision := "+allowDecision+" if { _ = "+call+" }", b.Name)
		})
	}
	if len(missing) != len(excludedBuiltins) {
		t.Errorf("built-ins left out of the pinned document: %q, want exactly the %d documented", missing, len(excludedBuiltins))
	}
	for _, n := range missing {
		if _, ok := excludedBuiltins[n]; !ok {
			t.Errorf("%s is left out of the pinned document but not documented as excluded", n)
		}
	}
}

// TestUnknownBuiltinRefused: a name no OPA implements (a future built-in,
// a typo) is refused too, and OPA's error names it.
func TestUnknownBuiltinRefused(t *testing.T) {
	for _, name := range []string{"net.fetch_secret", "http.send2", "opa.environment", "time.sleep"} {
		t.Run(name, func(t *testing.T) {
			e := activeEngine(t, Options{}, authzBundle("rev-good", "decision := "+allowDecision))
			err := e.Activate(context.Background(), authzBundle("rev-bad", "decision := "+allowDecision+" if { _ = "+name+"(1) }"))
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("Activate = %v, want an error naming %s", err, name)
			}
			if e.Revision() != "rev-good" {
				t.Fatalf("revision %q after a refused bundle", e.Revision())
			}
		})
	}
}

// TestAllowedBuiltinsLoad: a bundle that calls only allowed built-ins
// (including the clock) loads and decides.
func TestAllowedBuiltinsLoad(t *testing.T) {
	src := `decision := {"allow": ok, "status": 200, "reasons": [], "headers": {"x-n": sprintf("%d", [n])}} if {
	n := count([
		time.now_ns() > 0,
		regex.match("^/customers/[0-9]+$", "/customers/42"),
		glob.match("/public/**", ["/"], "/public/a/b"),
		startswith(lower("ABC"), "a"),
		net.cidr_contains("10.0.0.0/8", "10.1.2.3"),
		crypto.sha256("x") != "",
		json.marshal({"a": 1}) == "{\"a\":1}",
		units.parse("1K") == 1000,
		count(io.jwt.decode("eyJhbGciOiJub25lIn0.e30.")) == 3,
		base64url.encode_no_pad("x") == "eA",
		time.parse_rfc3339_ns("2026-01-01T00:00:00Z") > 0,
		object.get({}, "a", 1) == 1,
	])
	ok := n == 12
}
`
	e := activeEngine(t, Options{}, authzBundle("rev-ok", src))
	d, err := e.Evaluate(context.Background(), validInput())
	if err != nil || !d.Allow || d.Headers["x-n"] != "12" {
		t.Fatalf("decision %+v, %v", d, err)
	}
}

// TestPinnedCapabilitiesMatchThisOPA: every pinned built-in is implemented
// by the OPA Tollgate is built with, with the same declaration, and the
// language features are this OPA's. An OPA upgrade that changes either
// fails here, so the pinned document is reviewed with it.
func TestPinnedCapabilitiesMatchThisOPA(t *testing.T) {
	pinned, err := PinnedCapabilities()
	if err != nil {
		t.Fatal(err)
	}
	// Round-trip this OPA's document through JSON as the pinned one was,
	// so both lose the same details (argument names).
	cj, err := json.Marshal(ast.CapabilitiesForThisVersion())
	if err != nil {
		t.Fatal(err)
	}
	current, err := ast.LoadCapabilitiesJSON(bytes.NewReader(cj))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*ast.Builtin{}
	for _, b := range current.Builtins {
		byName[b.Name] = b
	}
	if len(pinned.Builtins) < 150 {
		t.Fatalf("only %d pinned built-ins", len(pinned.Builtins))
	}
	for _, b := range pinned.Builtins {
		cur, ok := byName[b.Name]
		if !ok {
			t.Errorf("%s is pinned but not implemented by this OPA", b.Name)
			continue
		}
		pj, _ := json.Marshal(b)
		cj, _ := json.Marshal(cur)
		if string(pj) != string(cj) {
			t.Errorf("%s: pinned declaration differs from this OPA's:\n%s\n%s", b.Name, pj, cj)
		}
	}
	if fmt.Sprint(pinned.Features) != fmt.Sprint(current.Features) || fmt.Sprint(pinned.FutureKeywords) != fmt.Sprint(current.FutureKeywords) {
		t.Errorf("features %v / keywords %v, this OPA has %v / %v", pinned.Features, pinned.FutureKeywords, current.Features, current.FutureKeywords)
	}
	for name := range excludedBuiltins {
		if pinned.ContainsBuiltin(name) {
			t.Errorf("%s is pinned", name)
		}
	}
}

// TestExtendCapabilities: an operator's document adds the built-ins it
// names (with this OPA's declarations) and removes nothing.
func TestExtendCapabilities(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("adds the named built-ins", func(t *testing.T) {
		caps, err := LoadCapabilitiesFile(write("ext.json", `{"builtins": [{"name": "rand.intn"}, {"name": "uuid.rfc4122", "decl": {"type": "function"}}, {"name": "abs"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		opts := Options{Capabilities: caps}
		e := activeEngine(t, opts, authzBundle("rev-ext", `decision := {"allow": rand.intn("s", 1) == 0, "status": 200, "reasons": [], "headers": {"x-id": uuid.rfc4122("s")}} if {
	time.now_ns() > 0
}`))
		if d, err := e.Evaluate(context.Background(), validInput()); err != nil || !d.Allow || d.Headers["x-id"] == "" {
			t.Fatalf("decision %+v, %v", d, err)
		}
		// What it does not name is still refused.
		mustRefuse(t, opts, "decision := "+allowDecision+" if { _ = "+excludedBuiltins["http.send"]+" }", "http.send")
		mustRefuse(t, opts, "decision := "+allowDecision+" if { _ = "+excludedBuiltins["opa.runtime"]+" }", "opa.runtime")
	})

	t.Run("an empty document changes nothing", func(t *testing.T) {
		caps, err := LoadCapabilitiesFile(write("empty.json", `{}`))
		if err != nil {
			t.Fatal(err)
		}
		pinned, _ := PinnedCapabilities()
		if len(caps.Builtins) != len(pinned.Builtins) {
			t.Fatalf("%d built-ins, want the %d pinned", len(caps.Builtins), len(pinned.Builtins))
		}
		mustRefuse(t, Options{Capabilities: caps}, "decision := "+allowDecision+" if { _ = "+excludedBuiltins["rand.intn"]+" }", "rand.intn")
	})

	bad := []struct{ name, body, want string }{
		{"unknown built-in", `{"builtins": [{"name": "rand.intn"}, {"name": "net.fetch_secret"}]}`, "net.fetch_secret"},
		{"no name", `{"builtins": [{"decl": {"type": "function"}}]}`, "without a name"},
		{"not JSON", `builtins: [rand.intn]`, "capabilities"},
		{"builtins not a list", `{"builtins": {"name": "rand.intn"}}`, "capabilities"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			p := write(strings.ReplaceAll(tc.name, " ", "_")+".json", tc.body)
			_, err := LoadCapabilitiesFile(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("LoadCapabilitiesFile = %v, want an error naming %q and the file", err, tc.want)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		if _, err := LoadCapabilitiesFile(filepath.Join(dir, "nope.json")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("error = %v, want os.ErrNotExist", err)
		}
	})
}
