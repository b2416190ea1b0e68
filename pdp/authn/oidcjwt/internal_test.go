package oidcjwt

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/authn"
)

func TestPrecheck(t *testing.T) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	tok := func(header, payload string) string { return enc(header) + "." + enc(payload) + ".c2ln" }
	const h = `{"alg":"RS256","kid":"k","typ":"at+jwt"}`
	cases := []struct {
		name, raw, reason string
	}{
		{"ok", tok(h, `{"iss":"https://idp","sub":"a"}`), ""},
		{"ok without signature (judged later)", enc(h) + "." + enc(`{}`) + ".", ""},
		{"empty", "", authn.ReasonMalformed},
		{"too large", strings.Repeat("a", 201), authn.ReasonTooLarge},
		{"empty header", "." + enc(`{}`) + ".c2ln", authn.ReasonMalformed},
		{"alg none", tok(`{"alg":"none"}`, `{}`), authn.ReasonAlgorithm},
		{"alg None", tok(`{"alg":"None"}`, `{}`), authn.ReasonAlgorithm},
		{"alg HS256", tok(`{"alg":"HS256"}`, `{}`), authn.ReasonAlgorithm},
		{"alg empty", tok(`{"alg":""}`, `{}`), authn.ReasonMalformed},
		{"ALG instead of alg", tok(`{"ALG":"RS256"}`, `{}`), authn.ReasonMalformed},
		{"kid not a string", tok(`{"alg":"RS256","kid":1}`, `{}`), authn.ReasonMalformed},
		{"b64 header", tok(`{"alg":"RS256","b64":false}`, `{}`), authn.ReasonMalformed},
		{"duplicate header member", tok(`{"alg":"RS256","kid":"a","kid":"b"}`, `{}`), authn.ReasonMalformed},
		{"nested duplicates are fine", tok(h, `{"a":{"x":1,"x":2},"b":[{"y":1}]}`), ""},
		{"iss nested is not iss", tok(h, `{"x":{"ISS":1}}`), ""},
		{"Iss", tok(h, `{"Iss":"https://idp"}`), authn.ReasonDuplicateClaim},
		{"JTI", tok(h, `{"jti":"1","JTI":"2"}`), authn.ReasonDuplicateClaim},
		{"nBf", tok(h, `{"nBf":1}`), authn.ReasonDuplicateClaim},
		{"issuer is not a variant of iss", tok(h, `{"issuer":"x","Audience":"y"}`), ""},
		{"payload null", tok(h, `null`), authn.ReasonMalformed},
		{"payload string", tok(h, `"x"`), authn.ReasonMalformed},
		{"payload with bad UTF-8 and a bad escape", tok(h, `{"a":"\x"}`), authn.ReasonMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, reason := precheck(tc.raw, 200)
			if reason != tc.reason {
				t.Fatalf("precheck = %q, want %q", reason, tc.reason)
			}
			if tc.name == "ok" && (u.alg != "RS256" || u.kid != "k" || u.typ != "at+jwt" || !u.hasTyp || u.iss != "https://idp" || !u.hasIss) {
				t.Fatalf("unverified = %+v", u)
			}
		})
	}
}

func FuzzPrecheck(f *testing.F) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	f.Add(enc(`{"alg":"RS256"}`) + "." + enc(`{"iss":"x","aud":["a"]}`) + ".c2ln")
	f.Add(enc(`{"alg":"ES256","typ":"JWT"}`) + "." + enc(`{"a":{"b":[1,2,{"c":null}]}}`) + ".")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, raw string) {
		u, reason := precheck(raw, DefaultMaxTokenBytes)
		if reason == "" && !isSupportedAlg(u.alg) {
			t.Fatalf("accepted alg %q", u.alg)
		}
	})
}

func TestTypeMatches(t *testing.T) {
	cases := []struct {
		got, want string
		ok        bool
	}{
		{"at+jwt", "at+jwt", true},
		{"AT+JWT", "at+jwt", true},
		{"application/at+jwt", "at+jwt", true},
		{"Application/AT+JWT", "at+jwt", true},
		{"at+jwt", "application/at+jwt", true},
		{"JWT", "at+jwt", false},
		{"", "at+jwt", false},
		{"application/", "application/", true},
		{"text/at+jwt", "at+jwt", false},
	}
	for _, tc := range cases {
		if got := typeMatches(tc.got, tc.want); got != tc.ok {
			t.Errorf("typeMatches(%q, %q) = %v", tc.got, tc.want, got)
		}
	}
}

func TestNumericDate(t *testing.T) {
	cases := []struct {
		json          string
		present, ok   bool
		unix, nanosec int64
	}{
		{`{}`, false, false, 0, 0},
		{`{"exp":1700000000}`, true, true, 1700000000, 0},
		{`{"exp":1700000000.25}`, true, true, 1700000000, 250000000},
		{`{"exp":1.7e9}`, true, true, 1700000000, 0},
		{`{"exp":-1}`, true, true, -1, 0},
		{`{"exp":"1700000000"}`, true, false, 0, 0},
		{`{"exp":null}`, true, false, 0, 0},
		{`{"exp":1e300}`, true, false, 0, 0},
		{`{"exp":` + strconv.FormatInt(maxNumericDate+1, 10) + `}`, true, false, 0, 0},
	}
	for _, tc := range cases {
		claims, ok := decodeClaims([]byte(tc.json))
		if !ok {
			t.Fatalf("decodeClaims(%s) failed", tc.json)
		}
		got, present, ok := numericDate(claims, "exp")
		if present != tc.present || ok != tc.ok || (ok && !got.Equal(time.Unix(tc.unix, tc.nanosec))) {
			t.Errorf("numericDate(%s) = %v, %v, %v", tc.json, got, present, ok)
		}
	}
}

func TestLimitedClient(t *testing.T) {
	const limit = 1000
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		body := strings.Repeat("x", n)
		if r.URL.Query().Get("chunked") != "" {
			w.(http.Flusher).Flush() // no Content-Length
		} else {
			w.Header().Set("Content-Length", strconv.Itoa(n))
		}
		_, _ = io.WriteString(w, body)
	}))
	defer srv.Close()
	c := limitedClient(nil, limit)
	if c.Timeout != DefaultHTTPTimeout {
		t.Fatalf("default timeout = %v", c.Timeout)
	}
	get := func(query string) (int, error) {
		resp, err := c.Get(srv.URL + "?" + query)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return len(b), err
	}
	for _, q := range []string{"n=1000", "n=1000&chunked=1", "n=10&chunked=1"} {
		if _, err := get(q); err != nil {
			t.Errorf("%s: %v", q, err)
		}
	}
	for _, q := range []string{"n=1001", "n=5000&chunked=1", "n=1001&chunked=1"} {
		if _, err := get(q); !errors.Is(err, ErrResponseTooLarge) {
			t.Errorf("%s: err = %v, want ErrResponseTooLarge", q, err)
		}
	}

	user := &http.Client{Timeout: time.Second}
	c = limitedClient(user, limit)
	if c == user || c.Timeout != time.Second || user.Transport != nil {
		t.Fatal("limitedClient must copy the user's client, keep its timeout and leave it untouched")
	}
	if _, ok := c.Transport.(*limitTransport); !ok {
		t.Fatalf("transport = %T", c.Transport)
	}
}

func TestParseJWKSKeepsPublicSigningKeysOnly(t *testing.T) {
	body := `{"keys":[
		{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"},
		{"kty":"EC","crv":"P-256","use":"enc","kid":"enc","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
		{"kty":"EC","crv":"P-256","kid":"sig","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","d":"jpsQnnGQmL-YBIffH1136cLSkwLr7Tnqm5qbygl9yUk"},
		{"kty":"XYZ","kid":"weird"}
	]}`
	keys, err := parseJWKS([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].KeyID != "sig" || !keys[0].IsPublic() {
		b, _ := json.Marshal(keys)
		t.Fatalf("keys = %s", b)
	}
}

func TestCheckJWKSURL(t *testing.T) {
	cases := []struct {
		iss, jwks string
		ok        bool
	}{
		{"https://idp", "https://idp/keys", true},
		{"https://idp", "https://b2c.example/keys?p=signin", true},
		{"http://localhost:1", "http://localhost:1/jwks", true},
		{"https://idp", "http://idp/keys", false},
		{"https://idp", "/keys", false},
		{"https://idp", "", false},
		{"https://idp", "file:///etc/passwd", false},
	}
	for _, tc := range cases {
		if err := checkJWKSURL(tc.iss, tc.jwks); (err == nil) != tc.ok {
			t.Errorf("checkJWKSURL(%q, %q) = %v", tc.iss, tc.jwks, err)
		}
	}
}
