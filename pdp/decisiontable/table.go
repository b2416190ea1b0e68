// Package decisiontable runs decision tables: YAML lists of requests, each
// with the credential it carries and the decision it must get, through the
// whole decision pipeline (normalize, find the credential, verify it, evaluate
// the policy), not only through Rego.
//
// The format is the one the end-to-end suite (test/e2e) sends to a running
// tollgate, so one file serves both. A case:
//
//	# cases.yaml: a list of cases
//	- name: customers, own record
//	  method: GET
//	  path: /customers/42          # the request target; may carry ?query
//	  host: api.example.com        # optional, default api.example.com
//	  headers: {x-request-id: r1}  # optional extra headers
//	  credential:
//	    kind: jwt                  # none (default) | jwt | api_key | raw
//	    placement: header          # header (default) | cookie | query
//	    sub: alice                 # jwt: the subject
//	    claims: {scope: "customers:read", customer_number: "42"}
//	    key: billing               # api_key: a key by name (see Keys)
//	    header: authorization      # raw: a header sent as it is
//	    value: "Bearer not-a-jwt"
//	  want:
//	    allow: true
//	    status: 200
//	    reasons: []                # optional: exactly these reasons
//	    reasons_prefix: [...]      # optional: the first reasons
//	    headers: {x-user-id: alice} # optional: exactly these headers
//
// A jwt is minted by a test issuer the Runner runs in-process (an ES256 key
// made for the run, trusted through a static key set: nothing is fetched):
// claims iss, aud, sub, iat, nbf and exp, with the case's claims over them.
// An api_key is generated for the run, with the owner and scopes Keys gives
// its name, and verified against an in-memory key store. In headers,
// ${issuer} expands to the test issuer and ${key_id} to the id of the case's
// API key.
package decisiontable

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxFileBytes bounds a case file.
const MaxFileBytes = 8 << 20

// ErrInvalidCase reports a case file that does not describe valid cases.
var ErrInvalidCase = errors.New("invalid decision table")

// Case is one request and the decision it must get.
type Case struct {
	Name       string            `yaml:"name" json:"name"`
	Method     string            `yaml:"method" json:"method"`
	Path       string            `yaml:"path" json:"path"`
	Host       string            `yaml:"host,omitempty" json:"host,omitempty"`
	Headers    map[string]string `yaml:"headers,omitempty" json:"headers,omitempty"`
	Credential Credential        `yaml:"credential,omitempty" json:"credential"`
	Want       Want              `yaml:"want" json:"want"`

	// File and Line say where the case is written (set by Load).
	File string `yaml:"-" json:"file,omitempty"`
	Line int    `yaml:"-" json:"line,omitempty"`
}

// Credential says which credential a case sends, and where.
type Credential struct {
	// Kind: "none" (or empty), "jwt", "api_key" or "raw".
	Kind string `yaml:"kind,omitempty" json:"kind,omitempty"`
	// Placement of a jwt or api_key: "header" (default), "cookie" (the
	// "session" cookie) or "query" (access_token, api_key).
	Placement string `yaml:"placement,omitempty" json:"placement,omitempty"`
	// Sub and Claims make a jwt.
	Sub    string         `yaml:"sub,omitempty" json:"sub,omitempty"`
	Claims map[string]any `yaml:"claims,omitempty" json:"claims,omitempty"`
	// Key names an api_key (see Keys).
	Key string `yaml:"key,omitempty" json:"key,omitempty"`
	// Header and Value of a raw credential, sent as they are.
	Header string `yaml:"header,omitempty" json:"header,omitempty"`
	Value  string `yaml:"value,omitempty" json:"-"` // never echoed: it may be a secret
}

// Want is the decision a case must get.
type Want struct {
	Allow  bool `yaml:"allow" json:"allow"`
	Status int  `yaml:"status" json:"status"`
	// Reasons, when set, must equal the decision's reasons exactly. An allow
	// must have none, whether or not they are listed; a deny must have some.
	Reasons []string `yaml:"reasons" json:"reasons,omitempty"`
	// ReasonsPrefix, when set, must be the start of the decision's reasons.
	ReasonsPrefix []string `yaml:"reasons_prefix" json:"reasons_prefix,omitempty"`
	// Headers, when set (even empty), must equal the decision's headers.
	Headers map[string]string `yaml:"headers" json:"headers,omitempty"`
}

// Load reads the cases of a file.
func Load(file string) ([]Case, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrInvalidCase, file, MaxFileBytes)
	}
	return Parse(file, b)
}

// Parse reads cases from b; file names them in errors and in Case.File.
// Unknown fields are errors, so that a misspelt expectation is never
// silently ignored.
func Parse(file string, b []byte) ([]Case, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidCase, file, err)
	}
	var cases []Case
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cases); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: %s has no cases", ErrInvalidCase, file)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidCase, file, err)
	}
	var lines []int
	if len(doc.Content) == 1 && doc.Content[0].Kind == yaml.SequenceNode {
		for _, n := range doc.Content[0].Content {
			lines = append(lines, n.Line)
		}
	}
	names := map[string]bool{}
	for i := range cases {
		c := &cases[i]
		c.File = file
		if i < len(lines) {
			c.Line = lines[i]
		}
		if err := c.validate(); err != nil {
			return nil, fmt.Errorf("%w: %s:%d: %w", ErrInvalidCase, file, c.Line, err)
		}
		if names[c.Name] {
			return nil, fmt.Errorf("%w: %s:%d: duplicate case name %q", ErrInvalidCase, file, c.Line, c.Name)
		}
		names[c.Name] = true
	}
	if len(cases) == 0 {
		return nil, fmt.Errorf("%w: %s has no cases", ErrInvalidCase, file)
	}
	return cases, nil
}

func (c *Case) validate() error {
	if c.Name == "" || c.Method == "" || c.Path == "" || c.Want.Status == 0 {
		return errors.New("a case needs name, method, path and want.status")
	}
	if !strings.HasPrefix(c.Path, "/") {
		return fmt.Errorf("case %q: path must start with /", c.Name)
	}
	cr := c.Credential
	switch cr.Kind {
	case "", "none":
	case "jwt":
		if cr.Sub == "" {
			return fmt.Errorf("case %q: a jwt credential needs sub", c.Name)
		}
	case "api_key":
		if cr.Key == "" {
			return fmt.Errorf("case %q: an api_key credential needs key", c.Name)
		}
		if cr.Placement == "cookie" {
			return fmt.Errorf("case %q: an api_key cannot be placed in a cookie", c.Name)
		}
	case "raw":
		if cr.Header == "" {
			return fmt.Errorf("case %q: a raw credential needs header", c.Name)
		}
	default:
		return fmt.Errorf("case %q: unknown credential kind %q (want none, jwt, api_key or raw)", c.Name, cr.Kind)
	}
	switch cr.Placement {
	case "", "header", "cookie", "query":
	default:
		return fmt.Errorf("case %q: unknown placement %q (want header, cookie or query)", c.Name, cr.Placement)
	}
	return nil
}

// Describe is the case's request and credential in one line, without any
// secret: what a person reads next to a failure.
func (c *Case) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", c.Method, c.Path)
	if c.Host != "" {
		fmt.Fprintf(&b, " (host %s)", c.Host)
	}
	for _, name := range sortedKeys(c.Headers) {
		fmt.Fprintf(&b, ", header %s", name)
	}
	cr := c.Credential
	switch cr.Kind {
	case "", "none":
		b.WriteString(", no credential")
	case "jwt":
		fmt.Fprintf(&b, ", jwt in %s: sub %s", placement(cr.Placement), cr.Sub)
		for _, k := range sortedKeys(cr.Claims) {
			fmt.Fprintf(&b, ", %s %s", k, compact(cr.Claims[k]))
		}
	case "api_key":
		fmt.Fprintf(&b, ", api_key %q in %s", cr.Key, placement(cr.Placement))
	case "raw":
		fmt.Fprintf(&b, ", raw %s header", cr.Header)
	}
	return b.String()
}

func placement(p string) string {
	if p == "" {
		return "header"
	}
	return p
}
