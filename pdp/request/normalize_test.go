package request

import (
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestNormalizePath(t *testing.T) {
	tests := []struct {
		name     string
		target   string
		path     string
		segments []string
		err      string // substring of the error; "" means success
	}{
		// Security regressions.
		{name: "dotdot resolved, policy sees admin", target: "/public/../admin/x", path: "/admin/x", segments: []string{"admin", "x"}},
		{name: "encoded dotdot resolved", target: "/public/%2e%2e/admin", path: "/admin", segments: []string{"admin"}},
		{name: "encoded dotdot upper case", target: "/public/%2E%2E/admin", path: "/admin", segments: []string{"admin"}},
		{name: "mixed encoded dotdot", target: "/public/.%2e/admin", path: "/admin", segments: []string{"admin"}},
		{name: "dotdot with encoded slash", target: "/public/..%2fadmin", err: "encoded slash"},
		{name: "encoded slash and dotdot", target: "/public%2F..%2Fadmin", err: "encoded slash"},
		{name: "backslash traversal", target: `/public\..\admin`, err: "backslash in path"},
		{name: "encoded backslash", target: "/public%5c..%5cadmin", err: "encoded backslash"},
		{name: "double slashes merged", target: "//admin//x", path: "/admin/x", segments: []string{"admin", "x"}},
		{name: "dotdot above root", target: "/..", err: "climbs above the root"},
		{name: "dotdot above root after pop", target: "/a/../../b", err: "climbs above the root"},
		{name: "encoded dotdot above root", target: "/%2e%2e/etc/passwd", err: "climbs above the root"},
		{name: "encoded NUL", target: "/%00", err: "NUL"},
		{name: "literal NUL", target: "/a\x00b", err: "NUL"},
		{name: "invalid escape", target: "/a%ZZ", err: "invalid percent-encoding"},
		{name: "truncated escape", target: "/a%4", err: "invalid percent-encoding"},
		{name: "lone percent", target: "/a%", err: "invalid percent-encoding"},
		{name: "escape cut by slash", target: "/a%4/b", err: "invalid percent-encoding"},
		{name: "non-unreserved escape kept, segment decoded", target: "/caf%C3%A9", path: "/caf%C3%A9", segments: []string{"café"}},
		{name: "lower-case escape upper-cased", target: "/caf%c3%a9", path: "/caf%C3%A9", segments: []string{"café"}},
		{name: "literal non-ASCII encoded", target: "/café", path: "/caf%C3%A9", segments: []string{"café"}},
		{name: "tilde decoded", target: "/%7Euser", path: "/~user", segments: []string{"~user"}},
		{name: "unreserved letters decoded", target: "/%61dmin", path: "/admin", segments: []string{"admin"}},
		{name: "dot segment and trailing slash", target: "/a/./b/", path: "/a/b", segments: []string{"a", "b"}},
		{name: "invalid UTF-8 encoded", target: "/%C3%28", err: "invalid UTF-8"},
		{name: "invalid UTF-8 literal", target: "/a\xffb", err: "invalid UTF-8"},
		{name: "overlong dot", target: "/%C0%AE%C0%AE/admin", err: "invalid UTF-8"},
		{name: "invalid UTF-8 in removed segment", target: "/%FF/../a", err: "invalid UTF-8"},
		{name: "encoded control", target: "/a%0Ab", err: "control character"},
		{name: "literal control", target: "/a\rb", err: "control character"},
		{name: "DEL", target: "/a%7f", err: "control character"},
		{name: "tomcat path parameter dotdot", target: "/public/..;/admin", err: "path parameter"},
		{name: "path parameter on dot", target: "/public/.;x/admin", err: "path parameter"},
		{name: "path parameter on empty segment", target: "/public/;/../admin", err: "path parameter"},
		{name: "encoded path parameter dotdot", target: "/public/..%3B/admin", err: "path parameter"},
		{name: "ordinary path parameter kept", target: "/a;jsessionid=1/b", path: "/a;jsessionid=1/b", segments: []string{"a;jsessionid=1", "b"}},

		// Ordinary normalization.
		{name: "root", target: "/", path: "/", segments: []string{}},
		{name: "only slashes", target: "///", path: "/", segments: []string{}},
		{name: "root dot", target: "/.", path: "/", segments: []string{}},
		{name: "up to root", target: "/a/..", path: "/", segments: []string{}},
		{name: "already normal", target: "/customers/42/orders", path: "/customers/42/orders", segments: []string{"customers", "42", "orders"}},
		{name: "trailing slash dropped", target: "/products/", path: "/products", segments: []string{"products"}},
		{name: "encoded space", target: "/a%20b", path: "/a%20b", segments: []string{"a b"}},
		{name: "literal space encoded", target: "/a b", path: "/a%20b", segments: []string{"a b"}},
		{name: "sub-delims literal kept", target: "/a!$&'()*+,;=:@b", path: "/a!$&'()*+,;=:@b", segments: []string{"a!$&'()*+,;=:@b"}},
		{name: "encoded sub-delim stays encoded", target: "/a%21b", path: "/a%21b", segments: []string{"a!b"}},
		{name: "encoded percent", target: "/100%25", path: "/100%25", segments: []string{"100%"}},
		{name: "double encoding not decoded twice", target: "/%252e%252e/admin", path: "/%252e%252e/admin", segments: []string{"%2e%2e", "admin"}},
		{name: "three dots is a name", target: "/a/.../b", path: "/a/.../b", segments: []string{"a", "...", "b"}},
		{name: "dot prefixed name", target: "/.well-known/x", path: "/.well-known/x", segments: []string{".well-known", "x"}},
		{name: "encoded question mark", target: "/a%3fb", path: "/a%3Fb", segments: []string{"a?b"}},
		{name: "query split at first question mark", target: "/a?b=/c?d", path: "/a", segments: []string{"a"}},

		// Target form.
		{name: "empty target", target: "", err: "empty request target"},
		{name: "asterisk form", target: "*", err: "origin form"},
		{name: "absolute form", target: "http://x/admin", err: "origin form"},
		{name: "authority form", target: "example.com:443", err: "origin form"},
		{name: "fragment", target: "/a#b", err: "fragment"},
		{name: "fragment in query", target: "/a?x=1#b", err: "fragment"},
		{name: "longest target", target: "/" + strings.Repeat("a", MaxTargetBytes-1), path: "/" + strings.Repeat("a", MaxTargetBytes-1), segments: []string{strings.Repeat("a", MaxTargetBytes-1)}},
		{name: "target too long", target: "/" + strings.Repeat("a", MaxTargetBytes), err: "longer than 8192"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := Normalize(Raw{Method: "GET", Target: tt.target})
			if tt.err != "" {
				if err == nil {
					t.Fatalf("Normalize(%q) = path %q, want error containing %q", tt.target, req.Path, tt.err)
				}
				checkError(t, err, tt.err)
				return
			}
			if err != nil {
				t.Fatalf("Normalize(%q): %v", tt.target, err)
			}
			if req.Path != tt.path {
				t.Errorf("Path = %q, want %q", req.Path, tt.path)
			}
			if req.Segments == nil || !reflect.DeepEqual(req.Segments, tt.segments) {
				t.Errorf("Segments = %#v, want %#v", req.Segments, tt.segments)
			}
			checkPathInvariants(t, req)
		})
	}
}

func TestNormalizeMethod(t *testing.T) {
	tests := []struct {
		name, method, want, err string
	}{
		{name: "lower case", method: "get", want: "GET"},
		{name: "mixed case", method: "PaTcH", want: "PATCH"},
		{name: "upper case", method: "DELETE", want: "DELETE"},
		{name: "leading space", method: " post", err: "not an HTTP token"},
		{name: "trailing tab", method: "POST\t", err: "not an HTTP token"},
		{name: "trailing no-break space", method: "GET\u00a0", err: "not an HTTP token"},
		{name: "trailing next line", method: "GET\u0085", err: "not an HTTP token"},
		{name: "leading ideographic space", method: "\u3000GET", err: "not an HTTP token"},
		{name: "trailing line feed", method: "GET\n", err: "not an HTTP token"},
		{name: "extension token", method: "M-SEARCH", want: "M-SEARCH"},
		{name: "32 bytes", method: strings.Repeat("A", 32), want: strings.Repeat("A", 32)},
		{name: "space inside", method: "GE T", err: "not an HTTP token"},
		{name: "empty", method: "", err: "empty method"},
		{name: "blank", method: "  ", err: "not an HTTP token"},
		{name: "33 bytes", method: strings.Repeat("A", 33), err: "longer than 32"},
		{name: "separator", method: "GET/1", err: "not an HTTP token"},
		{name: "non-ASCII", method: "GÉT", err: "not an HTTP token"},
		{name: "control", method: "GET\x00", err: "not an HTTP token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := Normalize(Raw{Method: tt.method, Target: "/"})
			if tt.err != "" {
				if err == nil {
					t.Fatalf("Normalize(method %q) = %q, want error", tt.method, req.Method)
				}
				checkError(t, err, tt.err)
				return
			}
			if err != nil {
				t.Fatalf("Normalize(method %q): %v", tt.method, err)
			}
			if req.Method != tt.want {
				t.Errorf("Method = %q, want %q", req.Method, tt.want)
			}
		})
	}
}

func TestNormalizeQuery(t *testing.T) {
	many := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = "p=1"
		}
		return strings.Join(parts, "&")
	}
	tests := []struct {
		name, target string
		want         map[string][]string
		err          string
	}{
		{name: "none", target: "/a", want: map[string][]string{}},
		{name: "empty after question mark", target: "/a?", want: map[string][]string{}},
		{name: "simple", target: "/a?page=2", want: map[string][]string{"page": {"2"}}},
		{name: "repeated", target: "/a?x=1&x=2&y", want: map[string][]string{"x": {"1", "2"}, "y": {""}}},
		{name: "decoded", target: "/a?q=a%20b+c&k%3D=v", want: map[string][]string{"q": {"a b c"}, "k=": {"v"}}},
		{name: "question mark in query", target: "/a?u=/b?c", want: map[string][]string{"u": {"/b?c"}}},
		{name: "empty pieces skipped", target: "/a?&&x=1&&", want: map[string][]string{"x": {"1"}}},
		{name: "100 parameters", target: "/a?" + many(100), want: map[string][]string{"p": strings.Split(strings.Repeat("1", 100), "")}},
		{name: "101 parameters", target: "/a?" + many(101), err: "more than 100 query parameters"},
		{name: "invalid escape", target: "/a?x=%zz", err: "invalid query"},
		{name: "semicolon separator", target: "/a?x=1;y=2", err: "invalid query"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := Normalize(Raw{Method: "GET", Target: tt.target})
			if tt.err != "" {
				if err == nil {
					t.Fatalf("Normalize(%q) = query %v, want error", tt.target, req.Query)
				}
				checkError(t, err, tt.err)
				return
			}
			if err != nil {
				t.Fatalf("Normalize(%q): %v", tt.target, err)
			}
			if req.Query == nil || !reflect.DeepEqual(req.Query, tt.want) {
				t.Errorf("Query = %#v, want %#v", req.Query, tt.want)
			}
		})
	}
}

func TestNormalizeHostSchemeAndCopiedFields(t *testing.T) {
	tests := []struct {
		name, host, scheme, wantHost, wantScheme, err string
	}{
		{name: "defaults", wantScheme: "http"},
		{name: "lower-cased", host: "API.Example.COM", scheme: "HTTPS", wantHost: "api.example.com", wantScheme: "https"},
		{name: "host with spaces around", host: " api.example.com ", err: "invalid character in host at byte 0"},
		{name: "host with no-break space", host: "api.example.com\u00a0", err: "invalid character in host"},
		{name: "http", host: "h:8080", scheme: "http", wantHost: "h:8080", wantScheme: "http"},
		{name: "mixed-case scheme", scheme: "Http", wantScheme: "http"},
		{name: "scheme with spaces", scheme: " https ", err: "unsupported scheme"},
		{name: "scheme with no-break space", scheme: "https\u00a0", err: "unsupported scheme"},
		{name: "other scheme", scheme: "ftp", err: "unsupported scheme"},
		{name: "websocket scheme", scheme: "wss", err: "unsupported scheme"},
		{name: "invalid UTF-8 host", host: "b\xfccher.example", err: "invalid UTF-8 in host"},
		{name: "UTF-8 host lower-cased", host: "BÜCHER.example", wantHost: "bücher.example", wantScheme: "http"},
		{name: "control character in host", host: "api\x00.example", err: "invalid character in host"},
		{name: "CRLF in host", host: "api.example\r\nX-Injected: 1", err: "invalid character in host"},
		{name: "space in host", host: "api example", err: "invalid character in host"},
		{name: "slash in host", host: "api.example/admin", err: "invalid character in host"},
		{name: "backslash in host", host: "api.example\\admin", err: "invalid character in host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := Normalize(Raw{ID: "id-1", Method: "GET", Target: "/", Host: tt.host, Scheme: tt.scheme, SourceIP: "203.0.113.7"})
			if tt.err != "" {
				if err == nil {
					t.Fatalf("Normalize(scheme %q) succeeded, want error", tt.scheme)
				}
				checkError(t, err, tt.err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req.Host != tt.wantHost || req.Scheme != tt.wantScheme {
				t.Errorf("Host, Scheme = %q, %q; want %q, %q", req.Host, req.Scheme, tt.wantHost, tt.wantScheme)
			}
			if req.ID != "id-1" || req.SourceIP != "203.0.113.7" {
				t.Errorf("ID, SourceIP = %q, %q; not copied", req.ID, req.SourceIP)
			}
		})
	}
}

func TestNormalizeHeaders(t *testing.T) {
	tests := []struct {
		name    string
		headers map[string][]string
		want    map[string][]string
		err     string
	}{
		{name: "nil", headers: nil, want: map[string][]string{}},
		{name: "lower-cased", headers: map[string][]string{"User-Agent": {"curl/8.5"}, "X-Api-Key": {"k"}},
			want: map[string][]string{"user-agent": {"curl/8.5"}, "x-api-key": {"k"}}},
		{name: "name with spaces around", headers: map[string][]string{" X-Api-Key ": {"k"}}, err: "invalid header name"},
		{name: "name with trailing tab", headers: map[string][]string{"Authorization\t": {"Bearer x"}}, err: "invalid header name"},
		{name: "name with no-break space", headers: map[string][]string{"Authorization\u00a0": {"Bearer x"}}, err: "invalid header name"},
		{name: "name with next line", headers: map[string][]string{"\u0085X-Api-Key": {"k"}}, err: "invalid header name"},
		{name: "name with ideographic space", headers: map[string][]string{"Cookie\u3000": {"k"}}, err: "invalid header name"},
		{name: "non-ASCII name", headers: map[string][]string{"X-Ápi-Key": {"k"}}, err: "invalid header name"},
		{name: "values kept as given", headers: map[string][]string{"Accept": {" a ", "b"}}, want: map[string][]string{"accept": {" a ", "b"}}},
		{name: "nil values become empty", headers: map[string][]string{"X-Empty": nil}, want: map[string][]string{"x-empty": {}}},
		{name: "case variants merged in name order", headers: map[string][]string{"x-api-key": {"b"}, "X-Api-Key": {"a"}, "X-API-KEY": {"c"}},
			want: map[string][]string{"x-api-key": {"c", "a", "b"}}},
		{name: "invalid name", headers: map[string][]string{"Bad Name": {"x"}}, err: "invalid header name"},
		{name: "empty name", headers: map[string][]string{"": {"x"}}, err: "invalid header name"},
		{name: "pseudo-header", headers: map[string][]string{":authority": {"x"}}, err: "invalid header name"},
		{name: "colon in name", headers: map[string][]string{"X-A:b": {"x"}}, err: "invalid header name"},
		{name: "CRLF in value", headers: map[string][]string{"X-A": {"ok", "x\r\nX-User-Id: admin"}}, err: "CR, LF or NUL"},
		{name: "NUL in value", headers: map[string][]string{"X-A": {"x\x00y"}}, err: "CR, LF or NUL"},
		{name: "lone CR in value", headers: map[string][]string{"X-A": {"x\ry"}}, err: "CR, LF or NUL"},
		{name: "lone LF at the end of a long value", headers: map[string][]string{"X-A": {strings.Repeat("t", 2048) + "\n"}}, err: "CR, LF or NUL"},
		{name: "tab and obs-text in value kept", headers: map[string][]string{"X-A": {"a\tb\xff"}}, want: map[string][]string{"x-a": {"a\tb\xff"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := Normalize(Raw{Method: "GET", Target: "/", Headers: tt.headers})
			if tt.err != "" {
				if err == nil {
					t.Fatalf("Normalize succeeded with headers %v, want error", tt.headers)
				}
				checkError(t, err, tt.err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req.Headers == nil || !reflect.DeepEqual(req.Headers, tt.want) {
				t.Errorf("Headers = %#v, want %#v", req.Headers, tt.want)
			}
			for k, v := range req.Headers {
				if v == nil {
					t.Errorf("Headers[%q] is nil", k)
				}
			}
		})
	}
}

// The Request must not share header value slices with the caller, and the
// value slices of different headers must not share spare capacity.
func TestNormalizeHeadersNotAliased(t *testing.T) {
	in := map[string][]string{"A": {"1", "2"}, "B": {"3"}, "C": {"4", "5"}}
	req, err := Normalize(Raw{Method: "GET", Target: "/", Headers: in})
	if err != nil {
		t.Fatal(err)
	}
	in["A"][0] = "changed"
	in["B"] = append(in["B"], "added")
	if got := req.Headers["a"]; !reflect.DeepEqual(got, []string{"1", "2"}) {
		t.Errorf("caller's change leaked: a = %q", got)
	}
	for _, k := range []string{"a", "b", "c"} {
		req.Headers[k] = append(req.Headers[k], "appended-"+k)
	}
	want := map[string][]string{"a": {"1", "2", "appended-a"}, "b": {"3", "appended-b"}, "c": {"4", "5", "appended-c"}}
	if !reflect.DeepEqual(req.Headers, want) {
		t.Errorf("appends interfered: %v", req.Headers)
	}
	if !reflect.DeepEqual(in["C"], []string{"4", "5"}) {
		t.Errorf("caller's slice changed: %v", in["C"])
	}
}

// secret is planted in the inputs of TestNormalizeErrorsQuoteNoInput; no
// error message may contain it, nor any long run of it.
const secret = "tgk_live_7Qm2ZpX9aR4vW1cY8bN3dK6fH0jL5sT"

// secretLeaked reports whether msg holds the secret or any 8-byte piece of it.
func secretLeaked(msg string) bool {
	for i := 0; i+8 <= len(secret); i++ {
		if strings.Contains(msg, secret[i:i+8]) {
			return true
		}
	}
	return false
}

// TestNormalizeErrorsQuoteNoInput is the regression test for secrets in
// error messages: a refused request target, header or host is never quoted,
// since it can carry a credential (a query parameter, a header value, a
// token in a path segment). Every kind of refusal is tried with the secret
// before, inside and after the offending spot.
func TestNormalizeErrorsQuoteNoInput(t *testing.T) {
	long := strings.Repeat("x", MaxTargetBytes)
	targets := []string{
		"/products?api_key=" + secret + "#x",
		"/products#" + secret,
		"/products?access_token=" + secret + "#",
		"http://h/products?access_token=" + secret,
		"https://" + secret + "@h/products",
		"*" + secret,
		secret + "/products",
		"/products/" + secret + "%2Fadmin",
		"/products/" + secret + "%5Cadmin",
		"/products/" + secret + `\admin`,
		"/products/" + secret + "%zz",
		"/products/" + secret + "%4",
		"/products/" + secret + "%00",
		"/products/" + secret + "\x00",
		"/products/" + secret + "%0d%0a",
		"/products/" + secret + "\x7f",
		"/products/" + secret + "%C0%AE",
		"/products/" + secret + "\xc0\xae",
		"/" + secret + "/../../admin",
		"/" + secret + "/..;/admin",
		"/products?api_key=" + secret + "&x=%zz",
		"/products?x=%zz&api_key=" + secret,
		"/products?api_key=" + secret + "%z",
		"/products?api_key=%" + secret,
		"/products?api_key=" + secret + ";x=1",
		"/products?" + strings.Repeat("p=1&", MaxQueryParams) + "api_key=" + secret,
		"/products?api_key=" + secret + long,
		"/" + secret + long,
	}
	var raws []Raw
	for _, target := range targets {
		raws = append(raws, Raw{Method: "GET", Target: target})
		// The same target with the secret partly percent-encoded: it must
		// not come back decoded either.
		raws = append(raws, Raw{Method: "GET", Target: strings.ReplaceAll(target, "tgk_live", "%74%67k%5flive")})
	}
	for _, header := range []string{"Authorization", "X-Api-Key", "Cookie", "X-Custom"} {
		for _, v := range []string{
			"Bearer " + secret + "\r\nX-User-Id: admin",
			secret + "\n",
			"\x00" + secret,
			"session=" + secret + "\r",
		} {
			raws = append(raws, Raw{Method: "GET", Target: "/", Headers: map[string][]string{header: {"ok", v}}})
		}
	}
	raws = append(raws,
		Raw{Method: "GET", Target: "/", Headers: map[string][]string{secret + " x": {"v"}}},
		Raw{Method: "GET", Target: "/", Headers: map[string][]string{"X-" + secret + "\u00a0": {secret}}},
		Raw{Method: secret + " GET", Target: "/"},
		Raw{Method: secret + secret, Target: "/"},
		Raw{Method: "GET\u00a0" + secret, Target: "/"},
		Raw{Method: "GET", Target: "/", Scheme: secret},
		Raw{Method: "GET", Target: "/", Host: "h/" + secret},
		Raw{Method: "GET", Target: "/", Host: secret + " h"},
		Raw{Method: "GET", Target: "/", Host: secret + "\xff"},
	)
	for _, raw := range raws {
		_, err := Normalize(raw)
		if err == nil {
			t.Errorf("Normalize(%+.60v) succeeded, want error", raw)
			continue
		}
		if !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%v does not wrap ErrInvalidRequest", err)
		}
		if msg := err.Error(); secretLeaked(msg) || secretLeaked(strings.ToLower(msg)) || len(msg) > 200 {
			t.Errorf("error quotes input: %q", msg)
		}
	}
}

// TestNormalizeErrorsSayWhere checks that the errors that can say where the
// problem is give the byte offset into the request target.
func TestNormalizeErrorsSayWhere(t *testing.T) {
	tests := []struct{ target, want string }{
		{"/a/b#c", "fragment in request target at byte 4"},
		{"/a%zz", "invalid percent-encoding in path at byte 2"},
		{"/ab/c%2fd", "encoded slash in path segment at byte 5"},
		{"/ab/c%00d", "NUL byte in path at byte 5"},
		{"/ab/c\x01d", "control character in path at byte 5"},
		{"/ab/c\\d", "backslash in path at byte 5"},
		{"/ab/%c0%ae", "invalid UTF-8 in the path segment starting at byte 4"},
		{"/ab/../../x", "dot segment climbs above the root at byte 7"},
		{"/ab/..;x/y", "path parameter on an empty or dot segment at byte 4"},
	}
	for _, tt := range tests {
		_, err := Normalize(Raw{Method: "GET", Target: tt.target})
		if err == nil {
			t.Errorf("Normalize(%q) succeeded", tt.target)
			continue
		}
		checkError(t, err, tt.want)
	}
}

func TestNormalizeFull(t *testing.T) {
	raw := Raw{
		ID:       "0f4c",
		Method:   "get",
		Target:   "/customers/42/./orders/?page=2",
		Host:     "API.example.com",
		Scheme:   "HTTPS",
		Headers:  map[string][]string{"User-Agent": {"curl/8.5"}},
		SourceIP: "203.0.113.7",
	}
	got, err := Normalize(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := &Request{
		ID:       "0f4c",
		Method:   "GET",
		Path:     "/customers/42/orders",
		Segments: []string{"customers", "42", "orders"},
		Host:     "api.example.com",
		Scheme:   "https",
		Query:    map[string][]string{"page": {"2"}},
		Headers:  map[string][]string{"user-agent": {"curl/8.5"}},
		SourceIP: "203.0.113.7",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Normalize =\n%#v\nwant\n%#v", got, want)
	}
}

func checkError(t *testing.T, err error, want string) {
	t.Helper()
	if !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("error %q does not wrap ErrInvalidRequest", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
}

// checkPathInvariants checks what every successfully normalized path must
// satisfy; the fuzz test relies on it.
func checkPathInvariants(t *testing.T, req *Request) {
	t.Helper()
	p := req.Path
	if !strings.HasPrefix(p, "/") {
		t.Fatalf("path %q does not start with /", p)
	}
	if strings.Contains(p, "//") {
		t.Fatalf("path %q contains //", p)
	}
	if p != "/" && strings.HasSuffix(p, "/") {
		t.Fatalf("path %q has a trailing slash", p)
	}
	if !utf8.ValidString(p) || strings.ContainsAny(p, "\x00\\?#") {
		t.Fatalf("path %q is not valid UTF-8 or contains NUL, \\, ? or #", p)
	}
	var parts []string
	if p != "/" {
		parts = strings.Split(p[1:], "/")
	}
	if len(parts) != len(req.Segments) {
		t.Fatalf("path %q has %d segments, Segments has %d: %q", p, len(parts), len(req.Segments), req.Segments)
	}
	for i, part := range parts {
		if part == "." || part == ".." {
			t.Fatalf("path %q has a dot segment", p)
		}
		for j := 0; j < len(part); j++ {
			c := part[j]
			if c == '%' {
				esc := part[j : j+3]
				b := unhex(esc[1])<<4 | unhex(esc[2])
				if esc != strings.ToUpper(esc) || class[b]&cUnreserved != 0 || b == '/' || b == '\\' || b < 0x20 || b == 0x7f {
					t.Fatalf("path %q has non-canonical or forbidden escape %q", p, esc)
				}
				j += 2
			} else if class[c]&cPathChar == 0 {
				t.Fatalf("path %q has literal %q", p, c)
			}
		}
		dec, err := url.PathUnescape(part)
		if err != nil || dec != req.Segments[i] {
			t.Fatalf("segment %d of %q decodes to %q (%v), Segments has %q", i, p, dec, err, req.Segments[i])
		}
		if !utf8.ValidString(dec) {
			t.Fatalf("segment %q is not valid UTF-8", dec)
		}
	}
	again, err := Normalize(Raw{Method: "GET", Target: p})
	if err != nil {
		t.Fatalf("Normalize(%q) (idempotence): %v", p, err)
	}
	if again.Path != p || !reflect.DeepEqual(again.Segments, req.Segments) {
		t.Fatalf("not idempotent: %q -> %q %q", p, again.Path, again.Segments)
	}
}

// refSegments is an independent, slow model of path normalization used by the
// fuzz test: it decodes each raw segment with net/url and resolves dot
// segments on a stack.
func refSegments(rawPath string) ([]string, bool) {
	segs := []string{}
	for _, part := range strings.Split(rawPath, "/") {
		if part == "" {
			continue
		}
		dec, err := url.PathUnescape(part)
		if err != nil || !utf8.ValidString(dec) || strings.ContainsAny(dec, "/\\\x7f") {
			return nil, false
		}
		for _, c := range []byte(dec) {
			if c < 0x20 {
				return nil, false
			}
		}
		if before, _, found := strings.Cut(dec, ";"); found && (before == "" || before == "." || before == "..") {
			return nil, false
		}
		switch dec {
		case ".":
		case "..":
			if len(segs) == 0 {
				return nil, false
			}
			segs = segs[:len(segs)-1]
		default:
			segs = append(segs, dec)
		}
	}
	return segs, true
}

// quietErrors is every fixed text Normalize's errors are made of, for the
// fuzz test to tell a quoted input from a coincidence with the message.
const quietErrors = "invalid request: empty method; method longer than 32 bytes; method is not an HTTP token; " +
	"empty request target; request target longer than 8192 bytes; request target is not in origin form (must start with \"/\"); " +
	"fragment in request target at byte; invalid percent-encoding in path; encoded slash in path segment; " +
	"encoded backslash in path; backslash in path; NUL byte in path; control character in path; " +
	"invalid UTF-8 in the path segment starting; dot segment climbs above the root; path parameter on an empty or dot segment; " +
	"of the request target; more than 100 query parameters; invalid query: invalid percent-encoding; " +
	"invalid query: \";\" is not a separator, or another syntax error"

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		"/", "/public/../admin/x", "/public/%2e%2e/admin", "/public/..%2fadmin",
		"/public%2F..%2Fadmin", `/public\..\admin`, "//admin//x", "/..", "/a/../../b",
		"/%00", "/a%ZZ", "/caf%C3%A9", "/café", "/%7Euser", "/a/./b/", "/%C3%28",
		"/public/..;/admin", "/a b?c=d&e", "/a?x=%zz", "/a#b", "/%252e", "/a%3b/b",
		"/.%2E/x", "/x/%2e/%2e%2e/y?z",
	} {
		f.Add("GET", s)
	}
	f.Add("GET", "/products?api_key=tgk_live_7Qm2ZpX9aR4vW1cY8bN3dK6fH0jL5sT#x")
	f.Add("GET", "http://h/products?access_token=eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.sig")
	f.Add("get ", "/a")
	f.Add("GET\u00a0", "/a")
	f.Add("GE T", "/a")
	f.Fuzz(func(t *testing.T, method, target string) {
		req, err := Normalize(Raw{Method: method, Target: target})
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %v does not wrap ErrInvalidRequest", err)
			}
			if len(err.Error()) > 200 {
				t.Fatalf("error message too long (%d bytes)", len(err.Error()))
			}
			// No error quotes input: a run of 12 bytes of the target or
			// method never appears in the message unless the message's
			// own text has it.
			for _, in := range []string{method, target} {
				for i := 0; i+12 <= len(in); i += 4 {
					if piece := in[i : i+12]; strings.Contains(err.Error(), piece) && !strings.Contains(quietErrors, piece) {
						t.Fatalf("error %q quotes input %q", err, piece)
					}
				}
			}
		} else {
			if !isToken(req.Method) || req.Method != strings.ToUpper(req.Method) {
				t.Fatalf("method %q", req.Method)
			}
			if req.Query == nil || req.Headers == nil || req.Segments == nil {
				t.Fatal("nil Query, Headers or Segments")
			}
			checkPathInvariants(t, req)
		}

		// Differential check of the path against the reference model.
		if target == "" || target[0] != '/' || len(target) > MaxTargetBytes || strings.Contains(target, "#") {
			return
		}
		rawPath, _, _ := strings.Cut(target, "?")
		want, ok := refSegments(rawPath)
		_, _, pathErr := normalizePath(rawPath)
		if ok != (pathErr == nil) {
			t.Fatalf("path %q: reference ok=%v, normalizePath error %v", rawPath, ok, pathErr)
		}
		if ok && err == nil && !reflect.DeepEqual(req.Segments, want) {
			t.Fatalf("path %q: Segments %q, reference %q", rawPath, req.Segments, want)
		}
	})
}

func BenchmarkNormalize(b *testing.B) {
	benchmarks := []struct {
		name string
		raw  Raw
	}{
		{name: "typical", raw: Raw{
			ID:     "0f4c",
			Method: "GET",
			Target: "/customers/42/orders?page=2",
			Host:   "api.example.com",
			Scheme: "https",
			Headers: map[string][]string{
				"User-Agent":    {"curl/8.5"},
				"Accept":        {"*/*"},
				"Authorization": {"Bearer eyJhbGciOi..."},
			},
			SourceIP: "203.0.113.7",
		}},
		{name: "messy-path", raw: Raw{
			Method: "get",
			Target: "//public/./%7euser/../caf%c3%a9/a%20b/x/",
		}},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Normalize(bm.raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestCommonHeadersCanonical(t *testing.T) {
	for canonical, lower := range commonHeaders {
		if got := http.CanonicalHeaderKey(lower); got != canonical {
			t.Errorf("commonHeaders key %q, want net/http's %q", canonical, got)
		}
		if strings.ToLower(canonical) != lower {
			t.Errorf("commonHeaders[%q] = %q", canonical, lower)
		}
	}
}
