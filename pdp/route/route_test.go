package route_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pdp/route"
)

// orders is the default policy's route table (policies/tollgate/routes).
var orders = []route.Route{
	{Methods: []string{"GET"}, Paths: []string{"/public/**"}},
	{Methods: []string{"GET"}, Paths: []string{"/products", "/products/{id}"}},
	{Methods: []string{"GET"}, Paths: []string{"/customers/{customer_number}", "/customers/{customer_number}/**"}},
	{Methods: []string{"PUT", "PATCH"}, Paths: []string{"/customers/{customer_number}", "/customers/{customer_number}/**"}},
	{Methods: []string{"*"}, Paths: []string{"/admin/**"}},
}

func segments(path string) []string {
	var segs []string
	for s := range strings.SplitSeq(path, "/") {
		if s != "" {
			segs = append(segs, s)
		}
	}
	return segs
}

// want is a match as the tests write it: route and path index, and params.
type want struct {
	route, path int
	params      map[string]string
}

func matchOf(t *route.Table, method string, segs []string) (want, bool) {
	m, ok := t.Match(method, segs)
	if !ok {
		return want{}, false
	}
	w := want{route: m.Route, path: m.Path, params: map[string]string{}}
	for _, p := range m.Params {
		w.params[p.Name] = segs[p.Segment]
	}
	return w, true
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name   string
		routes []route.Route
		method string
		path   string
		want   *want
	}{
		{"tail matches zero", orders, "GET", "/public", &want{0, 0, map[string]string{}}},
		{"tail matches more", orders, "GET", "/public/a/b/c.html", &want{0, 0, map[string]string{}}},
		{"literal", orders, "GET", "/products", &want{1, 0, map[string]string{}}},
		{"second path of a route", orders, "GET", "/products/7", &want{1, 1, map[string]string{"id": "7"}}},
		{"param then end", orders, "GET", "/customers/42", &want{2, 0, map[string]string{"customer_number": "42"}}},
		{"param then tail", orders, "GET", "/customers/42/orders/7", &want{2, 1, map[string]string{"customer_number": "42"}}},
		{"method picks the route", orders, "PATCH", "/customers/42", &want{3, 0, map[string]string{"customer_number": "42"}}},
		{"any method", orders, "PURGE", "/admin/x", &want{4, 0, map[string]string{}}},
		{"method not listed", orders, "DELETE", "/customers/42", nil},
		{"HEAD is not GET", orders, "HEAD", "/products", nil},
		{"method case is the request's", orders, "get", "/products", nil},
		{"literal is case-sensitive", orders, "GET", "/Products", nil},
		{"literal prefix is not a match", orders, "GET", "/publicity", nil},
		{"param needs a segment", orders, "GET", "/customers", nil},
		{"param takes one segment", orders, "GET", "/products/7/reviews", nil},
		{"root", orders, "GET", "/", nil},
		{"empty param segment", orders, "GET", "/products/", nil},
		{"first route wins over a later, more specific one",
			[]route.Route{{Methods: []string{"GET"}, Paths: []string{"/docs/**"}}, {Methods: []string{"GET"}, Paths: []string{"/docs/secret"}}},
			"GET", "/docs/secret", &want{0, 0, map[string]string{}}},
		{"first path of the route binds",
			[]route.Route{{Methods: []string{"GET"}, Paths: []string{"/a/{x}/**", "/a/{y}/b"}}},
			"GET", "/a/1/b", &want{0, 0, map[string]string{"x": "1"}}},
		{"later path of an earlier route beats an earlier path of a later route",
			[]route.Route{{Methods: []string{"GET"}, Paths: []string{"/x", "/a/{y}"}}, {Methods: []string{"GET"}, Paths: []string{"/a/b"}}},
			"GET", "/a/b", &want{0, 1, map[string]string{"y": "b"}}},
		{"literal and param at one position: table order decides",
			[]route.Route{{Methods: []string{"GET"}, Paths: []string{"/a/{id}"}}, {Methods: []string{"GET"}, Paths: []string{"/a/new"}}},
			"GET", "/a/new", &want{0, 0, map[string]string{"id": "new"}}},
		{"method filter skips the earlier route",
			[]route.Route{{Methods: []string{"POST"}, Paths: []string{"/a/**"}}, {Methods: []string{"get"}, Paths: []string{"/a/{x}"}}},
			"GET", "/a/1", &want{1, 0, map[string]string{"x": "1"}}},
		{"wildcard and listed method in one route",
			[]route.Route{{Methods: []string{"GET", "*"}, Paths: []string{"/a"}}},
			"DELETE", "/a", &want{0, 0, map[string]string{}}},
		{"doubled and trailing slashes in templates",
			[]route.Route{{Methods: []string{"GET"}, Paths: []string{"//a//{id}/", "/c/**/"}}},
			"GET", "/c", &want{0, 1, map[string]string{}}},
		{"root template", []route.Route{{Methods: []string{"GET"}, Paths: []string{"/"}}}, "GET", "/", &want{0, 0, map[string]string{}}},
		{"everything", []route.Route{{Methods: []string{"*"}, Paths: []string{"/**"}}}, "GET", "/", &want{0, 0, map[string]string{}}},
		{"param value is any characters",
			[]route.Route{{Methods: []string{"GET"}, Paths: []string{"/a/{x}"}}},
			"GET", "/a/{y}*", &want{0, 0, map[string]string{"x": "{y}*"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			table, err := route.Compile(tc.routes)
			if err != nil {
				t.Fatal(err)
			}
			segs := segments(tc.path)
			if tc.name == "empty param segment" {
				segs = []string{"products", ""} // outside the request contract
			}
			got, ok := matchOf(table, tc.method, segs)
			switch {
			case tc.want == nil && ok:
				t.Errorf("Match(%s %s) = %+v, want no match", tc.method, tc.path, got)
			case tc.want != nil && !ok:
				t.Errorf("Match(%s %s): no match, want %+v", tc.method, tc.path, *tc.want)
			case tc.want != nil && !reflect.DeepEqual(got, *tc.want):
				t.Errorf("Match(%s %s) = %+v, want %+v", tc.method, tc.path, got, *tc.want)
			}
		})
	}
}

func TestCompileRefusesInvalidTables(t *testing.T) {
	tests := map[string][]route.Route{
		"no methods":            {{Paths: []string{"/x"}}},
		"empty method":          {{Methods: []string{""}, Paths: []string{"/x"}}},
		"no paths":              {{Methods: []string{"GET"}}},
		"relative path":         {{Methods: []string{"GET"}, Paths: []string{"x"}}},
		"empty path":            {{Methods: []string{"GET"}, Paths: []string{""}}},
		"inner tail":            {{Methods: []string{"GET"}, Paths: []string{"/a/**/b"}}},
		"single star":           {{Methods: []string{"GET"}, Paths: []string{"/a/*"}}},
		"star in a literal":     {{Methods: []string{"GET"}, Paths: []string{"/a*b"}}},
		"bad param name":        {{Methods: []string{"GET"}, Paths: []string{"/a/{1x}"}}},
		"param name with dash":  {{Methods: []string{"GET"}, Paths: []string{"/a/{x-y}"}}},
		"empty braces":          {{Methods: []string{"GET"}, Paths: []string{"/a/{}"}}},
		"stray brace":           {{Methods: []string{"GET"}, Paths: []string{"/a/x{y}"}}},
		"unclosed brace":        {{Methods: []string{"GET"}, Paths: []string{"/a/{x"}}},
		"repeated param":        {{Methods: []string{"GET"}, Paths: []string{"/a/{x}/{x}"}}},
		"second route is wrong": {{Methods: []string{"GET"}, Paths: []string{"/x"}}, {Methods: []string{"GET"}, Paths: []string{"/y/**/z"}}},
	}
	for name, routes := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := route.Compile(routes); !errors.Is(err, route.ErrInvalid) {
				t.Errorf("Compile = %v, want ErrInvalid", err)
			}
		})
	}
	if table, err := route.Compile(nil); err != nil || table.Len() != 0 {
		t.Errorf("Compile(nil) = %v, %v; want an empty table", table, err)
	} else if _, ok := table.Match("GET", nil); ok {
		t.Error("an empty table matched")
	}
}

// scan is the matching semantics written as a plain loop over the table,
// for the fuzz target below (the Rego reference is checked in policies/).
func scan(routes []route.Route, method string, segs []string) (want, bool) {
	for i, r := range routes {
		ok := false
		for _, m := range r.Methods {
			if u := strings.ToUpper(m); u == "*" || u == method {
				ok = true
			}
		}
		if !ok {
			continue
		}
		for j, p := range r.Paths {
			if params, ok := scanTemplate(p, segs); ok {
				return want{i, j, params}, true
			}
		}
	}
	return want{}, false
}

func scanTemplate(template string, segs []string) (map[string]string, bool) {
	tsegs := segments(template)
	tail := len(tsegs) > 0 && tsegs[len(tsegs)-1] == "**"
	if tail {
		tsegs = tsegs[:len(tsegs)-1]
	}
	if len(segs) < len(tsegs) || (!tail && len(segs) != len(tsegs)) {
		return nil, false
	}
	params := map[string]string{}
	for k, t := range tsegs {
		if strings.HasPrefix(t, "{") {
			if segs[k] == "" {
				return nil, false
			}
			params[t[1:len(t)-1]] = segs[k]
		} else if t != segs[k] {
			return nil, false
		}
	}
	return params, true
}

// Generate returns a random valid route table of n routes over a small
// vocabulary, so that templates share prefixes and overlap, and a request
// path generator that mostly hits them.
func Generate(rng *rand.Rand, n int) []route.Route {
	words := []string{"a", "b", "c", "customers", "orders", "items", "v1", "v2", "x.json"}
	methods := []string{"GET", "get", "PUT", "POST", "PATCH", "DELETE", "*"}
	routes := make([]route.Route, n)
	for i := range routes {
		var r route.Route
		for range 1 + rng.IntN(2) {
			r.Methods = append(r.Methods, methods[rng.IntN(len(methods))])
		}
		for range 1 + rng.IntN(3) {
			var sb strings.Builder
			depth := rng.IntN(5)
			for k := range depth {
				sb.WriteString("/")
				if rng.IntN(3) == 0 {
					fmt.Fprintf(&sb, "{p%d}", k)
				} else {
					sb.WriteString(words[rng.IntN(len(words))])
				}
			}
			if rng.IntN(3) == 0 {
				sb.WriteString("/**")
			}
			if sb.Len() == 0 {
				sb.WriteString("/")
			}
			r.Paths = append(r.Paths, sb.String())
		}
		routes[i] = r
	}
	return routes
}

func FuzzMatchAgainstScan(f *testing.F) {
	f.Add(uint64(1), 8, "GET", "/a/b")
	f.Add(uint64(2), 30, "PATCH", "/customers/42/orders")
	f.Add(uint64(3), 1, "DELETE", "/")
	f.Add(uint64(4), 50, "get", "/v1/x.json/**")
	f.Fuzz(func(t *testing.T, seed uint64, n int, method, path string) {
		n = 1 + abs(n)%64
		routes := Generate(rand.New(rand.NewPCG(seed, 0)), n)
		table, err := route.Compile(routes)
		if err != nil {
			t.Fatalf("generated table refused: %v", err)
		}
		segs := segments(path)
		got, gotOK := matchOf(table, method, segs)
		want, wantOK := scan(routes, method, segs)
		if gotOK != wantOK || (gotOK && !reflect.DeepEqual(got, want)) {
			t.Fatalf("%s %s on %v: trie %+v %v, scan %+v %v", method, path, routes, got, gotOK, want, wantOK)
		}
	})
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// BenchmarkMatch shows the cost of a match does not grow with the table:
// the default policy's 5 routes against 10,000 generated ones, each with a
// path that matches and one that does not.
func BenchmarkMatch(b *testing.B) {
	large := LargeTable(10000)
	for _, bc := range []struct {
		name   string
		routes []route.Route
		method string
		path   string
		hit    bool
	}{
		{"routes=5/hit", orders, "GET", "/customers/42/orders", true},
		{"routes=5/miss", orders, "GET", "/nowhere/at/all", false},
		{"routes=10000/hit", large, "GET", "/svc1999/customers/42/orders", true},
		{"routes=10000/miss", large, "GET", "/nowhere/at/all", false},
	} {
		table, err := route.Compile(bc.routes)
		if err != nil {
			b.Fatal(err)
		}
		segs := segments(bc.path)
		if _, ok := table.Match(bc.method, segs); ok != bc.hit {
			b.Fatalf("%s: match %v, want %v", bc.name, ok, bc.hit)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				table.Match(bc.method, segs)
			}
		})
	}
}

// LargeTable is n routes the way a large API gateway has them: n/5
// services, each with the default policy's five routes under its own
// prefix (the benchmark's hit is in the last service).
func LargeTable(n int) []route.Route {
	routes := make([]route.Route, 0, n)
	for s := range n / len(orders) {
		for _, r := range orders {
			paths := make([]string, len(r.Paths))
			for k, p := range r.Paths {
				paths[k] = fmt.Sprintf("/svc%d%s", s, p)
			}
			routes = append(routes, route.Route{Methods: r.Methods, Paths: paths})
		}
	}
	return routes
}
