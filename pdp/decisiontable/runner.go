package decisiontable

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/apikey"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/request"
)

// The test issuer's identity. The issuer is never contacted: its key is
// handed to the verifier as a static key set.
const (
	Issuer   = "https://issuer.tollgate-check.invalid"
	Audience = "orders-api"
)

// Request defaults of every case: what the end-to-end suite sends.
const (
	DefaultHost     = "api.example.com"
	DefaultSourceIP = "203.0.113.7"
)

// Key is an API key the runner generates for a run, by name.
type Key struct {
	Owner  string
	Scopes []string
}

// DefaultKeys are the API keys a case can name when Options.Keys does not
// say otherwise (the same as the end-to-end suite's).
func DefaultKeys() map[string]Key {
	return map[string]Key{
		"billing": {Owner: "billing", Scopes: []string{"products:read"}},
		"noscope": {Owner: "reporting"},
	}
}

// Options configure a Runner. The zero value is all defaults.
type Options struct {
	// Keys are the API keys cases may name; nil means DefaultKeys.
	Keys map[string]Key
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Issuers are trusted besides the runner's own test issuer (e.g. the
	// development issuer, with a static key set: a runner fetches nothing).
	Issuers []oidcjwt.IssuerConfig
	// Recorders receive one record per decision, as a server's do (e.g. a
	// pdp/decisionlog.Logger writing the events replay reads).
	Recorders []pdp.Recorder
}

// Runner decides cases with a real pdp.Decider: an engine with the policy,
// the OIDC JWT verifier trusting the runner's issuer, and the API key
// verifier over the runner's keys.
type Runner struct {
	decider *pdp.Decider
	engine  *policy.Engine
	key     *ecdsa.PrivateKey
	kid     string
	keys    map[string]generatedKey
	now     func() time.Time
	seen    *lastInput
}

type generatedKey struct {
	id, raw string
}

// NewRunner builds a runner on engine, which must have an active policy.
func NewRunner(ctx context.Context, engine *policy.Engine, opts Options) (*Runner, error) {
	if !engine.Ready() {
		return nil, policy.ErrNoPolicy
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("test issuer key: %w", err)
	}
	tp, err := (&jose.JSONWebKey{Key: key.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("test issuer key: %w", err)
	}
	issuers := append([]oidcjwt.IssuerConfig{{
		Issuer:     Issuer,
		Audiences:  []string{Audience},
		Algorithms: []string{"ES256"},
		KeySet:     &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{key.Public()}},
	}}, opts.Issuers...)
	jwts, err := oidcjwt.New(ctx, oidcjwt.Config{Issuers: issuers, Now: now})
	if err != nil {
		return nil, fmt.Errorf("test issuer: %w", err)
	}
	defs := opts.Keys
	if defs == nil {
		defs = DefaultKeys()
	}
	r := &Runner{engine: engine, key: key, kid: fmt.Sprintf("%x", tp[:8]), keys: map[string]generatedKey{}, now: now, seen: &lastInput{}}
	var records []apikey.Record
	for _, name := range slices.Sorted(maps.Keys(defs)) {
		g, err := apikey.Generate(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("api key %q: %w", name, err)
		}
		owner := defs[name].Owner
		if owner == "" {
			owner = name
		}
		records = append(records, apikey.Record{ID: g.ID, Hash: g.Hash, Owner: owner, Scopes: defs[name].Scopes, Created: now()})
		r.keys[name] = generatedKey{id: g.ID, raw: g.Key.Reveal()}
	}
	store, err := apikey.NewStore(records)
	if err != nil {
		return nil, fmt.Errorf("api keys: %w", err)
	}
	r.decider, err = pdp.New(pdp.Config{
		Engine:         engine,
		Authenticators: []authn.Authenticator{jwts, apikey.New(store, apikey.Options{Now: now})},
		Shadow:         r.seen,
		Recorders:      opts.Recorders,
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// lastInput keeps the policy input of the last decision (the runner decides
// one case at a time).
type lastInput struct {
	in policy.Input
	ok bool
}

func (l *lastInput) Observe(in policy.Input, _ decision.Decision) { l.in, l.ok = in, true }

// Mint signs a token of the runner's issuer for sub, with claims over the
// standard ones (iss, aud, sub, iat, nbf, exp in ten minutes).
func (r *Runner) Mint(sub string, claims map[string]any) (string, error) {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: r.key, KeyID: r.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("token signer: %w", err)
	}
	now := r.now()
	all := map[string]any{
		"iss": Issuer, "aud": Audience, "sub": sub,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
	}
	maps.Copy(all, claims)
	tok, err := jwt.Signed(signer).Claims(jsonSafe(all)).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return tok, nil
}

// jsonSafe turns the map[any]any that YAML can produce into JSON objects.
func jsonSafe(v map[string]any) map[string]any {
	out := make(map[string]any, len(v))
	for k, x := range v {
		out[k] = jsonValue(x)
	}
	return out
}

func jsonValue(x any) any {
	switch t := x.(type) {
	case map[string]any:
		return jsonSafe(t)
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, v := range t {
			m[fmt.Sprint(k)] = jsonValue(v)
		}
		return m
	case []any:
		out := make([]any, len(t))
		for i, v := range t {
			out[i] = jsonValue(v)
		}
		return out
	}
	return x
}

// KeyID is the id of the API key named name ("" when there is none).
func (r *Runner) KeyID(name string) string { return r.keys[name].id }

// Request builds the request of a case, minting its credential.
func (r *Runner) Request(c Case) (request.Raw, error) {
	host := c.Host
	if host == "" {
		host = DefaultHost
	}
	raw := request.Raw{
		Method:   c.Method,
		Target:   c.Path,
		Host:     host,
		Scheme:   "https",
		Headers:  map[string][]string{"user-agent": {"tollgate-check"}},
		SourceIP: DefaultSourceIP,
	}
	for name, v := range c.Headers {
		name = strings.ToLower(name)
		raw.Headers[name] = append(raw.Headers[name], v)
	}
	cr := c.Credential
	var secret string
	switch cr.Kind {
	case "", "none":
		return raw, nil
	case "jwt":
		tok, err := r.Mint(cr.Sub, cr.Claims)
		if err != nil {
			return raw, fmt.Errorf("case %q: %w", c.Name, err)
		}
		secret = tok
	case "api_key":
		k, ok := r.keys[cr.Key]
		if !ok {
			return raw, fmt.Errorf("case %q: no API key named %q (known: %s)", c.Name, cr.Key, strings.Join(slices.Sorted(maps.Keys(r.keys)), ", "))
		}
		secret = k.raw
	case "raw":
		name := strings.ToLower(cr.Header)
		raw.Headers[name] = append(raw.Headers[name], cr.Value)
		return raw, nil
	default:
		return raw, fmt.Errorf("case %q: unknown credential kind %q", c.Name, cr.Kind)
	}
	target, err := Place(raw.Target, raw.Headers, cr.Kind, cr.Placement, secret)
	if err != nil {
		return raw, fmt.Errorf("case %q: %w", c.Name, err)
	}
	raw.Target = target
	return raw, nil
}

// Place puts a credential secret of kind ("jwt" or "api_key") where the
// case's placement says: "header" (the default; Authorization: Bearer for a
// JWT, X-API-Key for a key), "cookie" (the session cookie, beside another
// cookie) or "query" (access_token or api_key, appended to target). It adds
// to headers, whose names are lower case, and returns the target. The e2e
// suite places its credentials with it too, so that both read a case alike.
func Place(target string, headers map[string][]string, kind, placement, secret string) (string, error) {
	switch placement {
	case "", "header":
		if kind == "jwt" {
			headers["authorization"] = append(headers["authorization"], "Bearer "+secret)
		} else {
			headers["x-api-key"] = append(headers["x-api-key"], secret)
		}
	case "cookie":
		headers["cookie"] = append(headers["cookie"], "theme=dark; session="+secret)
	case "query":
		param := "access_token"
		if kind == "api_key" {
			param = "api_key"
		}
		sep := "?"
		if strings.Contains(target, "?") {
			sep = "&"
		}
		target += sep + param + "=" + url.QueryEscape(secret)
	default:
		return target, fmt.Errorf("unknown placement %q", placement)
	}
	return target, nil
}

// Decide runs one request through the pipeline. in is the policy input the
// decision was made on; ok is false when the request was refused before
// the policy ran (e.g. it could not be normalized).
func (r *Runner) Decide(ctx context.Context, raw request.Raw) (dec decision.Decision, in policy.Input, ok bool) {
	r.seen.ok = false
	dec = r.decider.Decide(ctx, raw)
	return dec, r.seen.in, r.seen.ok
}

// Result is the outcome of one case.
type Result struct {
	Case     Case
	Got      decision.Decision
	Problems []string // empty when the case passed
	Err      error    // the case could not be run
	Duration time.Duration
}

// Pass reports whether the case got the decision it wants.
func (res Result) Pass() bool { return res.Err == nil && len(res.Problems) == 0 }

// Run decides one case and compares the decision with what it wants.
func (r *Runner) Run(ctx context.Context, c Case) Result {
	start := time.Now()
	res := Result{Case: c}
	raw, err := r.Request(c)
	if err != nil {
		res.Err = err
		return res
	}
	res.Got, _, _ = r.Decide(ctx, raw)
	res.Duration = time.Since(start)
	res.Problems = r.Compare(c, res.Got)
	return res
}

// Compare lists how d differs from what c wants; nil when it does not.
func (r *Runner) Compare(c Case, d decision.Decision) []string {
	w := c.Want
	var p []string
	if d.Allow != w.Allow {
		p = append(p, fmt.Sprintf("allow is %v, want %v", d.Allow, w.Allow))
	}
	if d.Status != w.Status {
		p = append(p, fmt.Sprintf("status is %d, want %d", d.Status, w.Status))
	}
	switch {
	case d.Allow && len(d.Reasons) > 0:
		p = append(p, fmt.Sprintf("an allow with reasons %q", d.Reasons))
	case w.Reasons != nil && !slices.Equal(d.Reasons, w.Reasons):
		p = append(p, fmt.Sprintf("reasons are %q, want %q", d.Reasons, w.Reasons))
	case w.ReasonsPrefix != nil && (len(d.Reasons) < len(w.ReasonsPrefix) || !slices.Equal(d.Reasons[:len(w.ReasonsPrefix)], w.ReasonsPrefix)):
		p = append(p, fmt.Sprintf("reasons are %q, want them to start with %q", d.Reasons, w.ReasonsPrefix))
	case !d.Allow && len(d.Reasons) == 0:
		p = append(p, "a deny without reasons")
	}
	if w.Headers != nil {
		want := map[string]string{}
		for name, v := range w.Headers {
			v = strings.ReplaceAll(v, "${issuer}", Issuer)
			v = strings.ReplaceAll(v, "${key_id}", r.keys[c.Credential.Key].id)
			want[name] = v
		}
		got := d.Headers
		if got == nil {
			got = map[string]string{}
		}
		if !maps.Equal(got, want) {
			p = append(p, fmt.Sprintf("headers are %s, want %s", compact(got), compact(want)))
		}
	}
	return p
}

// compact is v as one line of JSON.
func compact(v any) string {
	b, err := json.Marshal(jsonValue(v))
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
