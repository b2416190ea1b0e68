// Package bench measures Tollgate in process, and the same work done by the
// peers Tollgate is built from, in the same run. Read the figures as
// ratios: these machines are shared and noisy.
//
//   - BenchmarkDecide: one whole decision (normalize, find, verify,
//     evaluate), a JWT on a sensitive route seen before (the token cache
//     answers) and cold, an API key on an internal route; with the decision
//     cache (as a server runs) and without.
//   - BenchmarkStage: each stage of the pipeline alone.
//   - BenchmarkPeer*: OPA's engine evaluating the default policy on the same
//     input given as JSON (how an OPA SDK user calls it); OPA deciding
//     everything itself with the load harness's Rego (io.jwt.decode_verify,
//     its io_jwt cache on, as `opa run --server` would); go-oidc verifying
//     the same tokens on its own.
//   - BenchmarkScale (scale_test.go): Decide and memory with 10,000 routes,
//     1,000,000 API keys and 100,000 live tokens, next to the small table;
//     small sizes unless TOLLGATE_BENCH_SCALE=1.
//
// Run:
//
//	go test -run '^$' -bench 'Decide|Peer|Stage' -benchmem -count 5 ./test/bench/
//	TOLLGATE_BENCH_SCALE=1 go test -run '^$' -bench 'Scale/routes_10000/' -benchmem -timeout 30m ./test/bench/
//
// (one table size per process; see BenchmarkScale and docs/BENCHMARKS.md).
package bench

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown/cache"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/authn/apikey"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/request"
)

// BenchmarkDecide is one whole decision: normalize, find, verify, evaluate.
// The pipeline as a server runs it has the token cache and the decision
// cache; "_no_decision_cache" evaluates the policy every time; "_cold"
// has neither cache (every token verified, every decision evaluated).
func BenchmarkDecide(b *testing.B) {
	f := newFixture(b, fixtureOptions{engines: bothEngines})
	for _, bc := range []struct {
		name string
		d    *pdp.Decider
		raw  request.Raw
	}{
		// The headline: a token seen before, on a sensitive route.
		{"jwt_sensitive_seen_before", f.decider, jwtRequest(f.rsToken, "42")},
		{"jwt_sensitive_seen_before_no_decision_cache", f.deciderNoDC, jwtRequest(f.rsToken, "42")},
		{"jwt_es256_high_s_sensitive_seen_before", f.decider, jwtRequest(f.esToken, "42")},
		{"jwt_rs256_sensitive_cold", f.cold, jwtRequest(f.rsToken, "42")},
		{"jwt_es256_sensitive_cold", f.cold, jwtRequest(f.esToken, "42")},
		{"apikey_internal", f.decider, keyRequest(f.key)},
		{"apikey_internal_no_decision_cache", f.deciderNoDC, keyRequest(f.key)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			decideOne(b, bc.d, bc.raw)
		})
	}
}

// opaInput is the input Tollgate builds for the JWT request, as a JSON
// document an OPA SDK user would pass.
func opaInput(b *testing.B, f *fixture) map[string]any {
	var input map[string]any
	doc := `{"request":{"id":"x","method":"GET","path":"/customers/42/orders","segments":["customers","42","orders"],
	  "host":"api.example.com","scheme":"https","query":{"page":["2"],"size":["50"]},
	  "headers":{"user-agent":["Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"],"accept":["application/json"],
	   "accept-encoding":["gzip, br"],"accept-language":["en-GB,en;q=0.9"],"x-request-id":["0f4c2a9be1d84c7f"],
	   "x-forwarded-for":["203.0.113.7"],"traceparent":["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]},
	  "source_ip":"203.0.113.7"},
	 "credential":{"type":"bearer","placement":"header","name":"authorization","status":"valid","error":"","fingerprint":"sha256:000000000000"},
	 "identity":{"kind":"user","subject":"alice","issuer":"` + f.issuer.URL() + `",
	  "claims":{"customer_number":"42","scope":"customers:read","email":"alice@example.com"},
	  "scopes":["customers:read"],"roles":[]}}`
	if err := json.Unmarshal([]byte(doc), &input); err != nil {
		b.Fatal(err)
	}
	return input
}

// BenchmarkPeerOPAEval is OPA's engine alone, evaluating the same embedded
// policy on the input Tollgate builds for the JWT request, passed as a JSON
// document the way an OPA SDK user passes it (prepared once, as OPA's
// server does). Without input.route, the policy matches the route in Rego.
// Compare with BenchmarkStage/eval/jwt_sensitive.
func BenchmarkPeerOPAEval(b *testing.B) {
	f := newFixture(b, fixtureOptions{engines: bothEngines})
	ctx := context.Background()
	bndl, err := bundles.Load(ctx, "embedded")
	if err != nil {
		b.Fatal(err)
	}
	pq, err := rego.New(rego.Query("data.tollgate.authz.decision"), rego.ParsedBundle("tollgate", bndl)).PrepareForEval(ctx)
	if err != nil {
		b.Fatal(err)
	}
	input := opaInput(b, f)
	rs, err := pq.Eval(ctx, rego.EvalInput(input))
	if err != nil || len(rs) != 1 || rs[0].Expressions[0].Value.(map[string]any)["allow"] != true {
		b.Fatalf("setup: %v %v", rs, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pq.Eval(ctx, rego.EvalInput(input)); err != nil {
			b.Fatal(err)
		}
	}
}

// peerPolicy is the load harness's OPA peer (test/load/opa/authz.rego): a
// policy that verifies the JWT itself with io.jwt.decode_verify and looks
// API keys up by SHA-256, on the same route table.
const peerPolicy = "../load/opa/authz.rego"

// BenchmarkPeerOPADecide is OPA deciding everything itself, as an operator
// running `opa run --server` with peerPolicy would: the same requests as
// BenchmarkDecide, the JWKS and the key hashes as data, and OPA's io_jwt
// inter-query cache on, so a token seen before is not verified again.
// Compare with BenchmarkDecide/jwt_sensitive_seen_before and
// BenchmarkDecide/apikey_internal.
func BenchmarkPeerOPADecide(b *testing.B) {
	f := newFixture(b, fixtureOptions{engines: bothEngines})
	ctx := context.Background()
	src, err := os.ReadFile(peerPolicy)
	if err != nil {
		b.Fatal(err)
	}
	resp, err := http.Get(f.issuer.JWKSURL())
	if err != nil {
		b.Fatal(err)
	}
	jwks, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256([]byte(f.key))
	keyID, _ := apikey.KeyID(f.key)
	data := map[string]any{
		"tollgate": map[string]any{"routes": f.bundle.Data["tollgate"].(map[string]any)["routes"]},
		"loadtest": map[string]any{
			"issuer": f.issuer.URL(), "audience": authntest.Audience, "jwks": string(jwks),
			"api_keys": map[string]any{hex.EncodeToString(sum[:]): map[string]any{"owner": "billing", "key_id": keyID, "scopes": []any{"products:read"}}},
		},
	}
	cfg, err := cache.ParseCachingConfig([]byte(`{"inter_query_builtin_value_cache":{"named":{"io_jwt":{"max_num_entries":10000}}}}`))
	if err != nil {
		b.Fatal(err)
	}
	pq, err := rego.New(
		rego.Query("data.loadtest.authz.decision"),
		rego.Module("authz.rego", string(src)),
		rego.Store(inmem.NewFromObject(data)),
		rego.InterQueryBuiltinValueCache(cache.NewInterQueryValueCache(ctx, cfg)),
	).PrepareForEval(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		raw  request.Raw
	}{
		{"jwt_sensitive_seen_before", jwtRequest(f.rsToken, "42")},
		{"apikey_internal", keyRequest(f.key)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			headers := map[string]any{}
			for k, v := range bc.raw.Headers {
				headers[strings.ToLower(k)] = v[0]
			}
			input := ast.NewObject(
				ast.Item(ast.StringTerm("method"), ast.StringTerm(bc.raw.Method)),
				ast.Item(ast.StringTerm("path"), ast.StringTerm(bc.raw.Target)),
				ast.Item(ast.StringTerm("headers"), ast.NewTerm(ast.MustInterfaceToValue(headers))),
			)
			eval := func() {
				rs, err := pq.Eval(ctx, rego.EvalParsedInput(input))
				if err != nil || len(rs) != 1 || rs[0].Expressions[0].Value.(map[string]any)["allow"] != true {
					b.Fatalf("%v %v", rs, err)
				}
			}
			eval()
			b.ReportAllocs()
			for b.Loop() {
				eval()
			}
		})
	}
}

// BenchmarkPeerGoOIDCVerify is go-oidc alone verifying the same tokens
// against the issuer's keys. Compare with
// BenchmarkStage/authn/oidcjwt_*_cold.
func BenchmarkPeerGoOIDCVerify(b *testing.B) {
	f := newFixture(b, fixtureOptions{engines: bothEngines})
	ctx := context.Background()
	for _, bc := range []struct{ name, token, kid string }{
		{"rs256", f.rsToken, authntest.KeyIDRSA},
		{"es256", f.esToken, authntest.KeyIDEC},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ks := &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{f.issuer.Key(bc.kid).Public()}}
			v := oidc.NewVerifier(f.issuer.URL(), ks, &oidc.Config{ClientID: authntest.Audience, SupportedSigningAlgs: []string{oidc.RS256, oidc.ES256}})
			if _, err := v.Verify(ctx, bc.token); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, bc.token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
