package opadata

import (
	"net/url"
	"slices"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/tollgate/tollgate/pdp/adapter/native"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/request"
)

// ---------------------------------------------------------------------------
// Kong

// kongInput is what Kong's OPA plugin posts as input (its handler's
// build_opa_input): the request under request.http, the client's address
// as client_ip, and, when the plugin is told to include them, the Service,
// Route and Consumer entities (ignored: they describe Kong, not the
// request, and a Consumer is a claimed identity).
type kongInput struct {
	Request struct {
		HTTP *kongHTTP `json:"http"`
	} `json:"request"`
	ClientIP string         `json:"client_ip"`
	Service  jsontext.Value `json:"service"`
	Route    jsontext.Value `json:"route"`
	Consumer jsontext.Value `json:"consumer"`
}

// kongHTTP is input.request.http. Path is kong.request.get_path(): the
// path without the query, still percent-encoded (Kong decodes at most
// unreserved characters), so it is judged as an origin-form path;
// Querystring is kong.request.get_query(), decoded, so it is re-encoded
// into the target and a credential in the query is found where the client
// put it.
type kongHTTP struct {
	Method      string              `json:"method"`
	Scheme      string              `json:"scheme"`
	Host        string              `json:"host"`
	Port        port                `json:"port"`
	Path        string              `json:"path"`
	Querystring queryArgs           `json:"querystring"`
	Headers     native.HeaderValues `json:"headers"`
	TLS         jsontext.Value      `json:"tls"`
	URICaptures jsontext.Value      `json:"uri_captures"`
	Body        jsontext.Value      `json:"body"`
	BodySize    jsontext.Value      `json:"body_size"`
	ParsedBody  jsontext.Value      `json:"parsed_body"`
}

func parseKong(input jsontext.Value) (request.Raw, error) {
	var in kongInput
	if err := json.Unmarshal(input, &in, decodeOptions); err != nil {
		return request.Raw{}, describe("Kong input", err)
	}
	h := in.Request.HTTP
	if h == nil || h.Method == "" || h.Path == "" {
		return request.Raw{}, describe("Kong input", fixed(`request.http.method and request.http.path are required`))
	}
	return request.Raw{
		Method:   h.Method,
		Target:   escapePath(h.Path, false) + h.Querystring.encode(),
		Host:     h.Host,
		Scheme:   h.Scheme,
		Headers:  h.Headers,
		SourceIP: in.ClientIP,
	}, nil
}

// kongResult is the object form of the result Kong's OPA plugin reads: on
// allow, headers are set on the upstream request; on deny, status, headers
// and message make the response.
type kongResult struct {
	Allow   bool              `json:"allow"`
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Message *denyBody         `json:"message,omitempty"`
}

func (h *Handler) kongResult(dec decision.Decision) kongResult {
	if dec.Allow {
		return kongResult{Allow: true, Status: dec.Status, Headers: allowHeaders(dec)}
	}
	return kongResult{Status: denyStatus(dec.Status), Headers: h.denyHeaders(dec), Message: &denyBody{dec.ID, reasons(dec)}}
}

// ---------------------------------------------------------------------------
// APISIX

// apisixInput is what APISIX's opa plugin posts as input (its helper's
// build_opa_input): type ("http" or "stream"), the request, the
// connection's nginx variables, and, when configured, the route, service
// and consumer (ignored, as for Kong).
type apisixInput struct {
	Type     string         `json:"type"`
	Request  *apisixRequest `json:"request"`
	Var      apisixVar      `json:"var"`
	Route    jsontext.Value `json:"route"`
	Service  jsontext.Value `json:"service"`
	Consumer jsontext.Value `json:"consumer"`
	Upstream jsontext.Value `json:"upstream"`
}

// apisixRequest is input.request. Path is nginx's $uri: decoded and
// normalized by nginx, so it is percent-encoded again into the target;
// Query is ngx.req.get_uri_args(), decoded, re-encoded like Kong's.
type apisixRequest struct {
	Scheme  string              `json:"scheme"`
	Method  string              `json:"method"`
	Host    string              `json:"host"`
	Port    port                `json:"port"`
	Path    string              `json:"path"`
	Headers native.HeaderValues `json:"headers"`
	Query   queryArgs           `json:"query"`
	Body    jsontext.Value      `json:"body"`
}

// apisixVar is input.var; only remote_addr is used.
type apisixVar struct {
	ServerAddr string         `json:"server_addr"`
	ServerPort port           `json:"server_port"`
	RemoteAddr string         `json:"remote_addr"`
	RemotePort port           `json:"remote_port"`
	Timestamp  jsontext.Value `json:"timestamp"`
}

func parseAPISIX(input jsontext.Value) (request.Raw, error) {
	var in apisixInput
	if err := json.Unmarshal(input, &in, decodeOptions); err != nil {
		return request.Raw{}, describe("APISIX input", err)
	}
	if in.Type != "http" {
		return request.Raw{}, describe("APISIX input", fixed(`type must be "http": Tollgate judges HTTP requests only`))
	}
	r := in.Request
	if r == nil || r.Method == "" || r.Path == "" {
		return request.Raw{}, describe("APISIX input", fixed(`request.method and request.path are required`))
	}
	return request.Raw{
		Method:   r.Method,
		Target:   escapePath(r.Path, true) + r.Query.encode(),
		Host:     r.Host,
		Scheme:   r.Scheme,
		Headers:  r.Headers,
		SourceIP: in.Var.RemoteAddr,
	}, nil
}

// apisixResult is the result APISIX's opa plugin reads: on allow, the
// headers listed in the plugin's send_headers_upstream go upstream; on
// deny, status_code, headers and reason make the response.
type apisixResult struct {
	Allow      bool              `json:"allow"`
	StatusCode int               `json:"status_code"`
	Headers    map[string]string `json:"headers"`
	Reason     *denyBody         `json:"reason,omitempty"`
}

func (h *Handler) apisixResult(dec decision.Decision) apisixResult {
	if dec.Allow {
		return apisixResult{Allow: true, StatusCode: dec.Status, Headers: allowHeaders(dec)}
	}
	return apisixResult{StatusCode: denyStatus(dec.Status), Headers: h.denyHeaders(dec), Reason: &denyBody{dec.ID, reasons(dec)}}
}

// ---------------------------------------------------------------------------
// Tollgate

func parseTollgate(input jsontext.Value) (request.Raw, error) {
	var in native.Body
	if err := json.Unmarshal(input, &in, decodeOptions); err != nil {
		return request.Raw{}, describe("input", err)
	}
	if in.Method == "" || in.Path == "" {
		return request.Raw{}, describe("input", fixed(`"method" and "path" are required`))
	}
	return request.Raw{
		Method:   in.Method,
		Target:   in.Path,
		Host:     in.Host,
		Scheme:   in.Scheme,
		Headers:  in.Headers,
		SourceIP: in.SourceIP,
	}, nil
}

// ---------------------------------------------------------------------------
// values

// port is a port given as a number or a string; it is read and ignored
// (the policy sees the host and scheme).
type port struct{}

func (*port) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	switch dec.PeekKind() {
	case '0', '"', 'n':
		_, err := dec.ReadToken()
		return err
	}
	return fixed("a port must be a number or a string")
}

// queryArgs are decoded query arguments as nginx's get_uri_args gives
// them: a string, true for an argument without "=", or a list of those
// for a repeated one.
type queryArgs []queryArg

type queryArg struct {
	name  string
	value string
	flag  bool // "name" alone, without "="
}

func (q *queryArgs) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	switch dec.PeekKind() {
	case 'n':
		_, err := dec.ReadToken()
		return err
	case '{':
	default:
		return fixed("the query must be an object")
	}
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	var out queryArgs
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken()
		if err != nil {
			return err
		}
		name := tok.String()
		one := func() error {
			tok, err := dec.ReadToken()
			if err != nil {
				return err
			}
			switch tok.Kind() {
			case '"':
				out = append(out, queryArg{name: name, value: tok.String()})
			case 't':
				out = append(out, queryArg{name: name, flag: true})
			default:
				return fixed("each query value must be a string, true or a list of them")
			}
			return nil
		}
		if dec.PeekKind() != '[' {
			if err := one(); err != nil {
				return err
			}
			continue
		}
		if _, err := dec.ReadToken(); err != nil {
			return err
		}
		for dec.PeekKind() != ']' {
			if err := one(); err != nil {
				return err
			}
		}
		if _, err := dec.ReadToken(); err != nil {
			return err
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	// Sorted by name, each name's values in their order: a JSON object's
	// order means nothing.
	slices.SortStableFunc(out, func(a, b queryArg) int { return strings.Compare(a.name, b.name) })
	*q = out
	return nil
}

// encode is the query string, with its "?", or "" when there is none.
func (q queryArgs) encode() string {
	if len(q) == 0 {
		return ""
	}
	var b strings.Builder
	for i, a := range q {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(a.name))
		if !a.flag {
			b.WriteByte('=')
			b.WriteString(url.QueryEscape(a.value))
		}
	}
	return "?" + b.String()
}

// escapePath makes p a path in origin form: '?' and '#' (which would start
// a query or a fragment), spaces, control characters and bytes outside
// ASCII are percent-encoded, and so is '%' itself when p is decoded
// (APISIX's nginx $uri). Everything else is left for request.Normalize to
// judge, so the path is judged as the gateway saw it.
func escapePath(p string, decoded bool) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '?' || c == '#' || c <= ' ' || c >= 0x7f || (decoded && c == '%') {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// reasons is never nil, so a deny's body always has a list.
func reasons(dec decision.Decision) []string {
	if dec.Reasons == nil {
		return []string{}
	}
	return dec.Reasons
}
