package credential_test

import (
	"testing"

	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/request"
)

// BenchmarkFind is finding the one credential of a normalized request with
// the default locations, for each place a credential comes from. Find
// removes the credential from the request; each iteration puts it back (a
// map assignment, no allocation), so every call finds it again.
func BenchmarkFind(b *testing.B) {
	const token = "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
	headers := func(extra ...string) map[string][]string {
		h := map[string][]string{
			"user-agent":      {"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
			"accept":          {"application/json"},
			"accept-encoding": {"gzip, br"},
			"x-request-id":    {"0f4c2a9be1d84c7f"},
			"traceparent":     {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		}
		for i := 0; i+1 < len(extra); i += 2 {
			h[extra[i]] = []string{extra[i+1]}
		}
		return h
	}
	cases := []struct {
		name string
		req  *request.Request
		key  string
		want credential.Placement
	}{
		{name: "bearer_header", req: &request.Request{Headers: headers("authorization", "Bearer "+token)}, key: "authorization", want: credential.PlacementHeader},
		{name: "api_key_header", req: &request.Request{Headers: headers("x-api-key", "tgk_aaaaaaaaaaaa_"+token[:43])}, key: "x-api-key", want: credential.PlacementHeader},
		{name: "session_cookie", req: &request.Request{Headers: headers("cookie", "theme=dark; session="+token+"; lang=en")}, key: "cookie", want: credential.PlacementCookie},
		{name: "query", req: &request.Request{Headers: headers(), Query: map[string][]string{"page": {"2"}, "access_token": {token}}}, key: "access_token", want: credential.PlacementQuery},
		{name: "none", req: &request.Request{Headers: headers(), Query: map[string][]string{"page": {"2"}}}, want: credential.PlacementNone},
	}
	f := credential.NewFinder(credential.DefaultLocations())
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			where := tc.req.Headers
			if tc.want == credential.PlacementQuery {
				where = tc.req.Query
			}
			saved := where[tc.key]
			b.ReportAllocs()
			for b.Loop() {
				if c := f.Find(tc.req); c.Placement != tc.want || c.Problem != "" {
					b.Fatalf("%+v", c)
				}
				if saved != nil {
					where[tc.key] = saved
				}
			}
		})
	}
}
