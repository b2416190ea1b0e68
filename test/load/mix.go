package main

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// kind is one class of request in the mix.
type kind int

const (
	ownOrders   kind = iota // GET /customers/{own}/orders?… with the user's token: allow
	ownRecord               // GET /customers/{own} with the user's token: allow
	otherRecord             // GET /customers/{someone else's} with the user's token: 403
	products                // GET /products[/{id}] with the API key or a token with products:read: allow
	public                  // GET /public/… without a credential: allow
	numKinds
)

func kindNames() []string {
	return []string{"own-orders", "own-record", "other-record", "products", "public"}
}

func (k kind) String() string { return kindNames()[k] }

// shares are the percentages of each kind; they sum to 100.
type shares [numKinds]int

var defaultShares = shares{60, 10, 10, 15, 5}

func (s shares) String() string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = strconv.Itoa(v)
	}
	return strings.Join(parts, ",")
}

func parseShares(v string) (shares, error) {
	var s shares
	parts := strings.Split(v, ",")
	if len(parts) != int(numKinds) {
		return s, fmt.Errorf("want %d comma-separated percentages (%s), got %q", numKinds, strings.Join(kindNames(), ","), v)
	}
	sum := 0
	for i, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 0 || n > 100 {
			return s, fmt.Errorf("%q is not a percentage", p)
		}
		s[i] = n
		sum += n
	}
	if sum != 100 {
		return s, fmt.Errorf("the shares sum to %d, not 100", sum)
	}
	return s, nil
}

// pick draws a kind with these shares.
func (s shares) pick(r *rand.Rand) kind {
	n := r.IntN(100)
	for k, v := range s {
		if n < v {
			return kind(k)
		}
		n -= v
	}
	return public // unreachable: the shares sum to 100
}

// user is one caller of the mix.
type user struct {
	subject  string
	customer string // customer number, a claim of the token and a path segment
	token    string // RS256, scopes customers:read products:read
}

// call is one request of the mix, as a gateway sees it, with the answer it
// must get.
type call struct {
	kind    kind
	method  string
	target  string   // path and query, as the client sent it
	headers []string // name, value pairs; names in lower case
	allow   bool
	status  int
	subject string // the x-user-id an allow carries; "" for none
}

// generator makes the calls of one client.
type generator struct {
	users      []user
	apiKey     string
	keyOwner   string
	shares     shares
	requestIDs bool
	prefix     string // of the request ids: unique per run and client
	rnd        *rand.Rand
	n          uint64
}

var orderQueries = []string{"", "?page=2", "?status=open", "?status=shipped&page=3", "?sort=-created&limit=20", "?since=2026-01-01&fields=id,total"}

// next is the next call.
func (g *generator) next() call {
	g.n++
	k := g.shares.pick(g.rnd)
	ui := g.rnd.IntN(len(g.users))
	u := &g.users[ui]
	c := call{kind: k, method: "GET", allow: true, status: 200, subject: u.subject}
	bearer := "Bearer " + u.token
	switch k {
	case ownOrders:
		c.target = "/customers/" + u.customer + "/orders" + orderQueries[g.rnd.IntN(len(orderQueries))]
		c.headers = []string{"authorization", bearer}
	case ownRecord:
		c.target = "/customers/" + u.customer
		c.headers = []string{"authorization", bearer}
	case otherRecord:
		j := g.rnd.IntN(len(g.users) - 1) // anyone but u
		if j >= ui {
			j++
		}
		c.target = "/customers/" + g.users[j].customer
		c.headers = []string{"authorization", bearer}
		c.allow, c.status, c.subject = false, 403, ""
	case products:
		c.target = "/products"
		if g.rnd.IntN(2) == 0 {
			c.target += "/" + strconv.Itoa(g.rnd.IntN(10_000))
		}
		if g.n%2 == 0 {
			c.headers = []string{"x-api-key", g.apiKey}
			c.subject = g.keyOwner
		} else {
			c.headers = []string{"authorization", bearer}
		}
	case public:
		c.target = "/public/docs/" + strconv.Itoa(g.rnd.IntN(100)) + ".html"
		c.subject = ""
	}
	if g.requestIDs {
		c.headers = append(c.headers, "x-request-id", g.prefix+strconv.FormatUint(g.n, 36))
	}
	return c
}

// decisionJSON is the body of POST /v1/decision for c: the fields
// Tollgate's native API and the OPA peer's input share. Every value is
// plain ASCII without quotes or backslashes (tokens, keys, paths and ids
// of the mix), so it is written without an encoder; checkJSONSafe guards
// that once per user.
func (c *call) decisionJSON(dst []byte) []byte {
	dst = append(dst, `{"method":"`...)
	dst = append(dst, c.method...)
	dst = append(dst, `","path":"`...)
	dst = append(dst, c.target...)
	dst = append(dst, `","headers":{`...)
	for i := 0; i < len(c.headers); i += 2 {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = append(dst, c.headers[i]...)
		dst = append(dst, `":"`...)
		dst = append(dst, c.headers[i+1]...)
		dst = append(dst, '"')
	}
	return append(dst, "}}"...)
}

// checkJSONSafe fails for a string decisionJSON cannot write as it is.
func checkJSONSafe(what, s string) error {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x20 || b >= 0x7f || b == '"' || b == '\\' {
			return fmt.Errorf("%s has a byte decisionJSON would have to escape", what)
		}
	}
	return nil
}
