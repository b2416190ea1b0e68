package e2e

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tollgate/tollgate/pdp/decisiontable"
)

// decisionCase is one request to POST /v1/decision and the decision it must
// get; test/cases/routes.yaml and testdata/paths.yaml are lists of them.
type decisionCase struct {
	Name       string            `yaml:"name"`
	Method     string            `yaml:"method"`
	Path       string            `yaml:"path"`
	Headers    map[string]string `yaml:"headers"` // extra request headers
	Credential credentialSpec    `yaml:"credential"`
	Want       wantDecision      `yaml:"want"`
}

// credentialSpec says which credential a case sends, and where.
type credentialSpec struct {
	// Kind: "none" (default), "jwt" (a token from the test issuer), "api_key"
	// (a key made by `tollgate apikey new`) or "raw" (Header: Value as given).
	Kind string `yaml:"kind"`
	// Placement of a jwt or api_key: "header" (default), "cookie" (the
	// "session" cookie; jwt only) or "query" (access_token / api_key).
	Placement string `yaml:"placement"`
	// Sub and Claims make the jwt: the issuer's sane claims for Sub (iss,
	// aud, iat, nbf, exp) with Claims added over them.
	Sub    string         `yaml:"sub"`
	Claims map[string]any `yaml:"claims"`
	// Key names the api_key: "billing" (scope products:read) or "noscope".
	Key string `yaml:"key"`
	// Header and Value of a raw credential.
	Header string `yaml:"header"`
	Value  string `yaml:"value"`
}

// wantDecision is the expected decision.
type wantDecision struct {
	Allow  bool `yaml:"allow"`
	Status int  `yaml:"status"`
	// Reasons, when set, must equal the decision's reasons exactly; an allow
	// must have none whether or not they are listed.
	Reasons []string `yaml:"reasons"`
	// ReasonsPrefix, when set, must be the start of the decision's reasons.
	ReasonsPrefix []string `yaml:"reasons_prefix"`
	// Headers, when set (even empty), must equal the decision's headers
	// exactly, after replacing ${issuer} with the issuer URL and ${key_id}
	// with the id of the case's API key.
	Headers map[string]string `yaml:"headers"`
}

func loadCases(t *testing.T, file string) []decisionCase {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	var cases []decisionCase
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cases); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	names := map[string]bool{}
	for i, c := range cases {
		if c.Name == "" || c.Method == "" || c.Path == "" || c.Want.Status == 0 {
			t.Fatalf("%s: case %d needs name, method, path and want.status", file, i)
		}
		if names[c.Name] {
			t.Fatalf("%s: duplicate case name %q", file, c.Name)
		}
		names[c.Name] = true
	}
	return cases
}

// request turns the case into a decision request, minting the token it
// names.
func (e *env) request(t *testing.T, c decisionCase) decisionRequest {
	t.Helper()
	dr := decisionRequest{
		Method:   c.Method,
		Path:     c.Path,
		Host:     "api.example.com",
		Scheme:   "https",
		Headers:  map[string][]string{"user-agent": {"tollgate-e2e"}},
		SourceIP: "203.0.113.7",
	}
	for name, v := range c.Headers {
		dr.Headers[name] = append(dr.Headers[name], v)
	}
	cr := c.Credential
	var secret string
	switch cr.Kind {
	case "", "none":
		return dr
	case "jwt":
		secret = e.mint(cr.Sub, cr.Claims)
	case "api_key":
		k, ok := e.keys[cr.Key]
		if !ok {
			t.Fatalf("case %q: no API key %q", c.Name, cr.Key)
		}
		secret = k.Raw
	case "raw":
		dr.Headers[cr.Header] = append(dr.Headers[cr.Header], cr.Value)
		return dr
	default:
		t.Fatalf("case %q: unknown credential kind %q", c.Name, cr.Kind)
	}
	path, err := decisiontable.Place(dr.Path, dr.Headers, cr.Kind, cr.Placement, secret)
	if err != nil {
		t.Fatalf("case %q: %v", c.Name, err)
	}
	dr.Path = path
	return dr
}

// check compares a decision with the case's expectation.
func (e *env) check(t *testing.T, c decisionCase, d decisionResponse) {
	t.Helper()
	w := c.Want
	if d.Allow != w.Allow || d.Status != w.Status {
		t.Errorf("got allow=%v status=%d reasons=%q, want allow=%v status=%d", d.Allow, d.Status, d.Reasons, w.Allow, w.Status)
	}
	switch {
	case w.Allow && len(d.Reasons) > 0:
		t.Errorf("an allow with reasons %q", d.Reasons)
	case w.Reasons != nil && !slices.Equal(d.Reasons, w.Reasons):
		t.Errorf("reasons %q, want %q", d.Reasons, w.Reasons)
	case w.ReasonsPrefix != nil && (len(d.Reasons) < len(w.ReasonsPrefix) || !slices.Equal(d.Reasons[:len(w.ReasonsPrefix)], w.ReasonsPrefix)):
		t.Errorf("reasons %q, want them to start with %q", d.Reasons, w.ReasonsPrefix)
	case !w.Allow && len(d.Reasons) == 0:
		t.Errorf("a deny without reasons")
	}
	if w.Headers != nil {
		want := map[string]string{}
		for name, v := range w.Headers {
			v = strings.ReplaceAll(v, "${issuer}", e.issuer.URL())
			v = strings.ReplaceAll(v, "${key_id}", e.keys[c.Credential.Key].ID)
			want[name] = v
		}
		got := d.Headers
		if got == nil {
			got = map[string]string{}
		}
		if !maps.Equal(got, want) {
			t.Errorf("headers %v, want %v", got, want)
		}
	}
}

// runCases runs every case of a file as a subtest against tg.
func (e *env) runCases(t *testing.T, tg *tollgate, file string) {
	for _, c := range loadCases(t, file) {
		t.Run(c.Name, func(t *testing.T) {
			e.check(t, c, e.decide(t, tg, e.request(t, c)))
		})
	}
}
