package bench

import (
	"context"
	"testing"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/request"
)

// BenchmarkStage measures each stage of the pipeline alone, on the
// requests of BenchmarkDecide: normalize, find the credential,
// authenticate it (oidcjwt cold for RS256 and ES256, the token cache's hit,
// an API key) and evaluate the embedded policy (and the decision cache's
// hit).
func BenchmarkStage(b *testing.B) {
	f := newFixture(b, fixtureOptions{engines: bothEngines})
	ctx := context.Background()
	finder := credential.NewFinder(credential.DefaultLocations())

	// prepared runs the pipeline up to the policy, as Decide does.
	prepared := func(raw request.Raw) (*request.Request, credential.Credential, policy.Input) {
		b.Helper()
		req, err := request.Normalize(raw)
		if err != nil {
			b.Fatal(err)
		}
		cred := finder.Find(req)
		var a authn.Authenticator = f.cache
		if cred.Type == credential.TypeAPIKey {
			a = f.keys
		}
		out, err := a.Authenticate(ctx, cred)
		if err != nil || out.Result != authn.Authenticated {
			b.Fatalf("setup: %+v, %v", out, err)
		}
		return req, cred, policy.Input{Request: req, Credential: cred, Status: policy.StatusValid, Identity: out.Identity}
	}
	jwtRaw := jwtRequest(f.rsToken, "42")
	_, rsCred, jwtIn := prepared(jwtRaw)
	_, esCred, _ := prepared(jwtRequest(f.esToken, "42"))
	_, keyCred, keyIn := prepared(keyRequest(f.key))

	b.Run("normalize", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := request.Normalize(jwtRaw); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("find", func(b *testing.B) {
		req, err := request.Normalize(jwtRaw)
		if err != nil {
			b.Fatal(err)
		}
		// Find removes the credential from the request; it is put back
		// after each call (a map assignment, no allocation).
		auth := req.Headers["authorization"]
		b.ReportAllocs()
		for b.Loop() {
			if c := finder.Find(req); c.Type != credential.TypeBearer || c.Problem != "" {
				b.Fatalf("%+v", c)
			}
			req.Headers["authorization"] = auth
		}
	})

	authenticate := func(name string, a authn.Authenticator, cred credential.Credential) {
		b.Run("authn/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if out, err := a.Authenticate(ctx, cred); err != nil || out.Result != authn.Authenticated {
					b.Fatalf("%+v, %v", out, err)
				}
			}
		})
	}
	authenticate("oidcjwt_rs256_cold", f.jwts, rsCred)
	authenticate("oidcjwt_es256_cold", f.jwts, esCred)
	authenticate("tokencache_hit", f.cache, rsCred)
	authenticate("apikey", f.keys, keyCred)

	evaluate := func(name string, e *policy.Engine, in policy.Input) {
		b.Run("eval/"+name, func(b *testing.B) {
			if _, err := e.Evaluate(ctx, in); err != nil { // fills the decision cache, if any
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if dec, err := e.Evaluate(ctx, in); err != nil || !dec.Allow {
					b.Fatalf("%+v, %v", dec, err)
				}
			}
		})
	}
	// The policy itself (the engine without its decision cache), then the
	// decision cache's hit.
	evaluate("jwt_sensitive", f.noDC, jwtIn)
	evaluate("apikey_internal", f.noDC, keyIn)
	evaluate("jwt_sensitive_decision_cache_hit", f.engine, jwtIn)
	evaluate("apikey_internal_decision_cache_hit", f.engine, keyIn)
}
