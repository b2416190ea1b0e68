package credential_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/request"
)

func newRequest(headers map[string][]string, query map[string][]string) *request.Request {
	if headers == nil {
		headers = map[string][]string{}
	}
	if query == nil {
		query = map[string][]string{}
	}
	return &request.Request{Method: "GET", Path: "/", Headers: headers, Query: query}
}

func TestFind(t *testing.T) {
	const tok = "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"
	tests := []struct {
		name      string
		headers   map[string][]string
		query     map[string][]string
		wantType  credential.Type
		wantPlace credential.Placement
		wantName  string
		wantValue string
		wantProb  string
	}{
		{name: "none", wantType: credential.TypeNone, wantPlace: credential.PlacementNone},
		{name: "bearer header", headers: map[string][]string{"authorization": {"Bearer " + tok}},
			wantType: credential.TypeBearer, wantPlace: credential.PlacementHeader, wantName: "authorization", wantValue: tok},
		{name: "bearer scheme any case", headers: map[string][]string{"authorization": {"bEaReR  " + tok}},
			wantType: credential.TypeBearer, wantPlace: credential.PlacementHeader, wantName: "authorization", wantValue: tok},
		{name: "bearer with tabs and spaces around", headers: map[string][]string{"authorization": {"\tBearer \t" + tok + " \t"}},
			wantType: credential.TypeBearer, wantPlace: credential.PlacementHeader, wantName: "authorization", wantValue: tok},
		{name: "NBSP after the token is kept", headers: map[string][]string{"authorization": {"Bearer " + tok + "\u00a0"}},
			wantType: credential.TypeBearer, wantPlace: credential.PlacementHeader, wantName: "authorization", wantValue: tok + "\u00a0"},
		{name: "U+3000 before the token is kept", headers: map[string][]string{"authorization": {"Bearer \u3000" + tok}},
			wantType: credential.TypeBearer, wantPlace: credential.PlacementHeader, wantName: "authorization", wantValue: "\u3000" + tok},
		{name: "U+2003 in an API key header is kept", headers: map[string][]string{"x-api-key": {"\u2003k1\u2003"}},
			wantType: credential.TypeAPIKey, wantPlace: credential.PlacementHeader, wantName: "x-api-key", wantValue: "\u2003k1\u2003"},
		{name: "basic scheme is invalid", headers: map[string][]string{"authorization": {"Basic YTpi"}},
			wantType: credential.TypeBearer, wantPlace: credential.PlacementHeader, wantName: "authorization", wantProb: credential.ProblemUnsupportedScheme},
		{name: "bare token in authorization is invalid", headers: map[string][]string{"authorization": {tok}},
			wantType: credential.TypeBearer, wantPlace: credential.PlacementHeader, wantName: "authorization", wantProb: credential.ProblemUnsupportedScheme},
		{name: "empty bearer", headers: map[string][]string{"authorization": {"Bearer "}},
			wantType: credential.TypeBearer, wantPlace: credential.PlacementHeader, wantName: "authorization", wantProb: credential.ProblemEmpty},
		{name: "session cookie", headers: map[string][]string{"cookie": {"theme=dark; session=" + tok}},
			wantType: credential.TypeBearer, wantPlace: credential.PlacementCookie, wantName: "session", wantValue: tok},
		{name: "access_token query", query: map[string][]string{"access_token": {tok}},
			wantType: credential.TypeBearer, wantPlace: credential.PlacementQuery, wantName: "access_token", wantValue: tok},
		{name: "api key header", headers: map[string][]string{"x-api-key": {"tgk_abc_def"}},
			wantType: credential.TypeAPIKey, wantPlace: credential.PlacementHeader, wantName: "x-api-key", wantValue: "tgk_abc_def"},
		{name: "api key query", query: map[string][]string{"api_key": {"tgk_abc_def"}},
			wantType: credential.TypeAPIKey, wantPlace: credential.PlacementQuery, wantName: "api_key", wantValue: "tgk_abc_def"},
		{name: "two authorization values", headers: map[string][]string{"authorization": {"Bearer a", "Bearer a"}},
			wantType: credential.TypeBearer, wantPlace: credential.PlacementHeader, wantName: "authorization", wantProb: credential.ErrMultipleCredentials},
		{name: "header and api key", headers: map[string][]string{"authorization": {"Bearer a"}, "x-api-key": {"k"}},
			wantType: credential.TypeBearer, wantPlace: credential.PlacementHeader, wantName: "authorization", wantProb: credential.ErrMultipleCredentials},
		{name: "header and query reports query", headers: map[string][]string{"authorization": {"Bearer a"}}, query: map[string][]string{"api_key": {"k"}},
			wantType: credential.TypeBearer, wantPlace: credential.PlacementQuery, wantName: "api_key", wantProb: credential.ErrMultipleCredentials},
		{name: "malformed cookie naming session", headers: map[string][]string{"cookie": {"session=\x01bad"}},
			wantType: credential.TypeBearer, wantPlace: credential.PlacementCookie, wantName: "session", wantProb: credential.ProblemMalformedCookie},
	}
	f := credential.NewFinder(credential.DefaultLocations())
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := newRequest(tc.headers, tc.query)
			c := f.Find(req)
			if c.Type != tc.wantType || c.Placement != tc.wantPlace || c.Name != tc.wantName || c.Problem != tc.wantProb {
				t.Fatalf("got type=%q placement=%q name=%q problem=%q, want %q %q %q %q",
					c.Type, c.Placement, c.Name, c.Problem, tc.wantType, tc.wantPlace, tc.wantName, tc.wantProb)
			}
			if tc.wantValue != "" && c.Secret.Reveal() != tc.wantValue {
				t.Fatalf("secret = %q, want %q", c.Secret.Reveal(), tc.wantValue)
			}
			// No credential location survives in the request.
			for _, h := range []string{"authorization", "x-api-key"} {
				if _, ok := req.Headers[h]; ok {
					t.Errorf("header %q left in request", h)
				}
			}
			for _, q := range []string{"access_token", "api_key"} {
				if _, ok := req.Query[q]; ok {
					t.Errorf("query %q left in request", q)
				}
			}
			for _, line := range req.Headers["cookie"] {
				if strings.Contains(line, "session") {
					t.Errorf("session cookie left in request: %q", line)
				}
			}
		})
	}
}

func TestFindKeepsOtherCookiesAndParams(t *testing.T) {
	req := newRequest(map[string][]string{"cookie": {"theme=dark; session=tok; lang=en"}, "user-agent": {"curl"}},
		map[string][]string{"page": {"2"}, "access_token": {"tok"}})
	c := credential.NewFinder(credential.DefaultLocations()).Find(req)
	if c.Problem != credential.ErrMultipleCredentials {
		t.Fatalf("problem = %q, want multiple credentials", c.Problem)
	}
	if got := req.Headers["cookie"]; len(got) != 1 || got[0] != "theme=dark; lang=en" {
		t.Errorf("cookie = %q", got)
	}
	if got := req.Query["page"]; len(got) != 1 || got[0] != "2" {
		t.Errorf("page = %q", got)
	}
	if got := req.Headers["user-agent"]; len(got) != 1 {
		t.Errorf("user-agent = %q", got)
	}
}

func TestFindOnlySessionCookieRemovesCookieHeader(t *testing.T) {
	req := newRequest(map[string][]string{"cookie": {"session=tok"}}, nil)
	credential.NewFinder(credential.DefaultLocations()).Find(req)
	if _, ok := req.Headers["cookie"]; ok {
		t.Fatal("empty cookie header kept")
	}
}

func TestConfiguredLocations(t *testing.T) {
	f := credential.NewFinder(credential.Locations{Bearer: credential.Sources{Headers: []string{"X-Token"}}})
	req := newRequest(map[string][]string{"x-token": {"abc"}, "authorization": {"Bearer zzz"}}, nil)
	c := f.Find(req)
	if c.Type != credential.TypeBearer || c.Name != "x-token" || c.Secret.Reveal() != "abc" {
		t.Fatalf("got %+v", c)
	}
	if _, ok := req.Headers["authorization"]; !ok {
		t.Fatal("unconfigured header must be left alone")
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	const raw = "super-secret-value"
	s := credential.NewSecret(raw)
	c := credential.Credential{Type: credential.TypeAPIKey, Secret: s}
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "secret", s, "cred", c)
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{
		"%v": fmt.Sprintf("%v", c), "%+v": fmt.Sprintf("%+v", c), "%#v": fmt.Sprintf("%#v", c),
		"%s": fmt.Sprintf("%s %q", s, s), "json": string(js), "slog": logged.String(),
	} {
		if strings.Contains(out, raw) {
			t.Errorf("%s reveals the secret: %s", name, out)
		}
	}
	if fp := s.Fingerprint(); !strings.HasPrefix(fp, "sha256:") || len(fp) != len("sha256:")+12 {
		t.Errorf("fingerprint = %q", fp)
	}
	if credential.NewSecret("").Fingerprint() != "" {
		t.Error("empty secret must have no fingerprint")
	}
}
