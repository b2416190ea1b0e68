package credential

import (
	"net/http"
	"slices"
	"strings"

	"github.com/tollgate/tollgate/pdp/request"
)

// Sources names where one type of credential is looked for. Header and
// cookie names are matched case-insensitively and case-sensitively
// respectively, query parameter names exactly.
type Sources struct {
	Headers []string `yaml:"headers"`
	Cookies []string `yaml:"cookies"`
	Query   []string `yaml:"query"`
}

// Locations says where bearer tokens and API keys are looked for.
type Locations struct {
	Bearer Sources `yaml:"bearer"`
	APIKey Sources `yaml:"api_key"`
}

// DefaultLocations are the contract's defaults: bearer tokens in the
// Authorization header, the "session" cookie or the "access_token" query
// parameter; API keys in the X-API-Key header or the "api_key" parameter.
func DefaultLocations() Locations {
	return Locations{
		Bearer: Sources{Headers: []string{"authorization"}, Cookies: []string{"session"}, Query: []string{"access_token"}},
		APIKey: Sources{Headers: []string{"x-api-key"}, Query: []string{"api_key"}},
	}
}

// Problems found while looking for the credential.
const (
	// ProblemUnsupportedScheme: an Authorization header with a scheme other
	// than Bearer (Basic, Digest…). It is removed and treated as invalid.
	ProblemUnsupportedScheme = "unsupported_scheme"
	// ProblemEmpty: a credential location is present but empty.
	ProblemEmpty = "empty_credential"
	// ProblemMalformedCookie: a Cookie header that cannot be parsed and
	// names a credential cookie.
	ProblemMalformedCookie = "malformed_cookie"
)

// Finder finds the one credential of a request. The zero value finds
// nothing; build it with NewFinder.
type Finder struct {
	bearer, apiKey sources
}

type sources struct {
	headers, cookies, query []string
}

func lowerAll(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s = strings.ToLower(strings.TrimSpace(s)); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// NewFinder returns a Finder for the given locations.
func NewFinder(loc Locations) Finder {
	return Finder{
		bearer: sources{headers: lowerAll(loc.Bearer.Headers), cookies: loc.Bearer.Cookies, query: loc.Bearer.Query},
		apiKey: sources{headers: lowerAll(loc.APIKey.Headers), cookies: loc.APIKey.Cookies, query: loc.APIKey.Query},
	}
}

// Find returns the request's credential and removes every credential it
// finds from req's headers, cookies and query, so that the request can be
// handed to a policy or a log without secrets.
//
// A request with more than one credential (in any places, of any types, even
// the same value twice) yields a credential with Problem
// ErrMultipleCredentials; its type and placement are those of the first one
// found, except that placement is "query" if any of them was in the query,
// so that query-placement rules still apply.
func (f Finder) Find(req *request.Request) Credential {
	var found []Credential
	found = f.collect(req, TypeBearer, f.bearer, found)
	found = f.collect(req, TypeAPIKey, f.apiKey, found)
	switch len(found) {
	case 0:
		return None()
	case 1:
		return found[0]
	}
	c := Credential{Type: found[0].Type, Placement: found[0].Placement, Name: found[0].Name, Problem: ErrMultipleCredentials}
	for _, x := range found {
		if x.Placement == PlacementQuery {
			c.Placement, c.Name = PlacementQuery, x.Name
			break
		}
	}
	return c
}

func (f Finder) collect(req *request.Request, t Type, src sources, found []Credential) []Credential {
	for _, name := range src.headers {
		values, ok := req.Headers[name]
		if !ok {
			continue
		}
		delete(req.Headers, name)
		for _, v := range values {
			found = append(found, headerCredential(t, name, v))
		}
	}
	if len(src.cookies) > 0 {
		found = stripCookies(req, t, src.cookies, found)
	}
	for _, name := range src.query {
		values, ok := req.Query[name]
		if !ok {
			continue
		}
		delete(req.Query, name)
		for _, v := range values {
			found = append(found, valueCredential(t, PlacementQuery, name, v))
		}
	}
	return found
}

// headerCredential reads a credential from one header value. The
// Authorization header must use the Bearer scheme; other headers may carry
// the bare value or a "Bearer " prefix.
//
// Only HTTP's whitespace (space and tab, RFC 9110 section 5.6.3) is trimmed:
// a Unicode space (U+00A0, U+3000, ...) stays part of the value, so it makes
// a token malformed instead of giving one token a second spelling.
func headerCredential(t Type, name, v string) Credential {
	v = strings.Trim(v, httpWhitespace)
	scheme, rest, _ := strings.Cut(v, " ")
	switch {
	case strings.EqualFold(scheme, "bearer"):
		v = strings.Trim(rest, httpWhitespace)
	case name == "authorization":
		return Credential{Type: t, Placement: PlacementHeader, Name: name, Problem: ProblemUnsupportedScheme}
	}
	return valueCredential(t, PlacementHeader, name, v)
}

// httpWhitespace is HTTP's optional whitespace: space and horizontal tab.
const httpWhitespace = " \t"

func valueCredential(t Type, p Placement, name, v string) Credential {
	c := Credential{Type: t, Placement: p, Name: name, Secret: NewSecret(v)}
	if v == "" {
		c.Problem = ProblemEmpty
	}
	return c
}

// stripCookies removes the named cookies from the request's Cookie headers
// and records each as a credential. Other cookies are kept, re-serialized.
func stripCookies(req *request.Request, t Type, names []string, found []Credential) []Credential {
	lines, ok := req.Headers["cookie"]
	if !ok {
		return found
	}
	var kept []string
	for _, line := range lines {
		cookies, err := http.ParseCookie(line)
		if err != nil {
			// An unparsable Cookie header may hide a credential: keep it out
			// of the policy input, and treat it as a malformed credential
			// only if a credential cookie name appears in it.
			for _, n := range names {
				if strings.Contains(line, n+"=") {
					found = append(found, Credential{Type: t, Placement: PlacementCookie, Name: n, Problem: ProblemMalformedCookie})
				}
			}
			continue
		}
		var rest []string
		for _, ck := range cookies {
			if slices.Contains(names, ck.Name) {
				found = append(found, valueCredential(t, PlacementCookie, ck.Name, ck.Value))
				continue
			}
			rest = append(rest, ck.Name+"="+ck.Value)
		}
		if len(rest) > 0 {
			kept = append(kept, strings.Join(rest, "; "))
		}
	}
	if len(kept) == 0 {
		delete(req.Headers, "cookie")
	} else {
		req.Headers["cookie"] = kept
	}
	return found
}
