package main

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/spf13/cobra"

	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/decisiontable"
	"github.com/tollgate/tollgate/pdp/request"
)

// maxEvalInputBytes bounds the request file of `tollgate eval --input`.
const maxEvalInputBytes = 1 << 20

type evalFlags struct {
	bundle    string
	input     string
	method    string
	path      string
	host      string
	headers   []string
	jwtSub    string
	jwtClaims string
	keyScopes string
	apiKey    bool
	placement string
	format    string
	dev       bool

	capabilities string
}

func newEvalCommand() *cobra.Command {
	var fl evalFlags
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "Decide one request offline and explain the decision",
		Long: `Decide one request against a policy bundle, offline, through the whole
pipeline (normalize, find the credential, verify it, evaluate the policy), and
print the decision with what explains it: the credential as the policy saw it,
the route that matched, and the checks the request breaks.

The request comes from flags (--method, --path, --host, --header) or from a
JSON file in the shape of the body of POST /v1/decision (--input). A
credential can be minted as 'tollgate check' mints one: --jwt-claims makes a
JWT of a test issuer this command runs itself (trusted for this run only),
--api-key-scopes makes an API key with those scopes; --placement puts it in
a header (default), the "session" cookie or a query parameter. A credential
given as a raw --header is verified as it is: a token of another issuer is
invalid here, except the development issuer's ('tollgate token') with --dev.

Exit status: 0 the request was decided (allowed or denied); 1 it could not be.`,
		Example: `  tollgate eval --path /customers/42 --jwt-claims '{"scope":"customers:read","customer_number":"42"}'
  tollgate eval --bundle ./policy --method PUT --path /customers/42 --jwt-sub alice --jwt-claims '{"scope":"customers:read"}'
  tollgate eval --path /products --api-key-scopes products:read --placement query
  tollgate eval --path /admin/users --header 'X-Request-Id: r-1'
  tollgate eval --dev --path /customers/42 --header "Authorization: Bearer $(tollgate token --sub alice --claim customer_number=42 --scope customers:read)"
  tollgate eval --input request.json --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fl.apiKey = cmd.Flags().Changed("api-key-scopes")
			return runEval(cmd.Context(), fl, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&fl.bundle, "bundle", "b", "", "policy bundle directory (default: the embedded default policy)")
	f.StringVarP(&fl.input, "input", "i", "", "a JSON file with the request, as the body of POST /v1/decision")
	f.StringVarP(&fl.method, "method", "X", "GET", "request method")
	f.StringVarP(&fl.path, "path", "p", "", "request target: path and optional ?query")
	f.StringVar(&fl.host, "host", "", "request host (default "+decisiontable.DefaultHost+")")
	f.StringArrayVarP(&fl.headers, "header", "H", nil, "a request header, 'Name: value' (repeatable)")
	f.StringVar(&fl.jwtSub, "jwt-sub", "user", "with --jwt-claims: the token's subject")
	f.StringVar(&fl.jwtClaims, "jwt-claims", "", "mint a JWT with these claims (a JSON object) over iss, aud, sub, iat, nbf, exp")
	f.StringVar(&fl.keyScopes, "api-key-scopes", "", "send a new API key with these scopes (comma-separated; may be empty)")
	f.StringVar(&fl.placement, "placement", "header", "where the minted credential goes: header, cookie (jwt only) or query")
	f.StringVarP(&fl.format, "format", "f", "text", "output format: text or json")
	f.StringVar(&fl.capabilities, "capabilities", "", "policy.capabilities file extending the built-ins a policy may call (as 'serve' reads it)")
	f.BoolVar(&fl.dev, "dev", false, "also trust the development issuer (tokens of 'tollgate token'), as 'serve --dev' does")
	return cmd
}

// decisionBody is the body of POST /v1/decision (pdp/adapter/native).
type decisionBody struct {
	Method   string                     `json:"method"`
	Path     string                     `json:"path"`
	Host     string                     `json:"host"`
	Scheme   string                     `json:"scheme"`
	Headers  map[string]json.RawMessage `json:"headers"`
	SourceIP string                     `json:"source_ip"`
}

func readDecisionBody(file string) (request.Raw, error) {
	f, err := os.Open(file)
	if err != nil {
		return request.Raw{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxEvalInputBytes+1))
	if err != nil {
		return request.Raw{}, err
	}
	if len(b) > maxEvalInputBytes {
		return request.Raw{}, fmt.Errorf("%s: larger than %d bytes", file, maxEvalInputBytes)
	}
	var body decisionBody
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		return request.Raw{}, fmt.Errorf("%s: %w", file, err)
	}
	raw := request.Raw{Method: body.Method, Target: body.Path, Host: body.Host, Scheme: body.Scheme,
		SourceIP: body.SourceIP, Headers: map[string][]string{}}
	for name, v := range body.Headers {
		var one string
		if err := json.Unmarshal(v, &one); err == nil {
			raw.Headers[name] = append(raw.Headers[name], one)
			continue
		}
		var many []string
		if err := json.Unmarshal(v, &many); err != nil {
			return request.Raw{}, fmt.Errorf("%s: header %q: want a string or a list of strings", file, name)
		}
		raw.Headers[name] = append(raw.Headers[name], many...)
	}
	return raw, nil
}

func runEval(ctx context.Context, fl evalFlags, out io.Writer) error {
	if fl.format != "text" && fl.format != "json" {
		return exitErr(exitError, fmt.Errorf("--format %q: want text or json", fl.format))
	}
	if fl.jwtClaims != "" && fl.apiKey {
		return exitErr(exitError, fmt.Errorf("--jwt-claims and --api-key-scopes: give one credential"))
	}
	c := decisiontable.Case{Name: "eval", Method: fl.method, Path: fl.path, Host: fl.host, Headers: map[string]string{}}
	switch {
	case fl.jwtClaims != "":
		c.Credential = decisiontable.Credential{Kind: "jwt", Sub: fl.jwtSub, Placement: fl.placement}
		if err := json.Unmarshal([]byte(fl.jwtClaims), &c.Credential.Claims); err != nil {
			return exitErr(exitError, fmt.Errorf("--jwt-claims: want a JSON object: %w", err))
		}
	case fl.apiKey:
		c.Credential = decisiontable.Credential{Kind: "api_key", Key: "eval", Placement: fl.placement}
	}
	keys, err := parseKeyFlags([]string{"eval=" + fl.keyScopes})
	if err != nil {
		return exitErr(exitError, err)
	}
	caps, err := policyCapabilities(fl.capabilities)
	if err != nil {
		return exitErr(exitError, err)
	}
	engine, b, err := loadBundleEngine(ctx, fl.bundle, caps)
	if err != nil {
		return exitErr(exitError, err)
	}
	ropts := decisiontable.Options{Keys: keys}
	if fl.dev {
		key, err := loadOrCreateDevKey(devKeyPath())
		if err != nil {
			return exitErr(exitError, err)
		}
		ropts.Issuers = append(ropts.Issuers, oidcjwt.IssuerConfig{
			Issuer: devIssuer, Audiences: []string{devAudience}, Algorithms: []string{"ES256"},
			KeySet: &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{key.key.Public()}},
		})
	}
	runner, err := decisiontable.NewRunner(ctx, engine, ropts)
	if err != nil {
		return exitErr(exitError, err)
	}

	var raw request.Raw
	if fl.input != "" {
		if fl.path != "" || len(fl.headers) > 0 || c.Credential.Kind != "" {
			return exitErr(exitError, fmt.Errorf("--input: give the request in the file only, no --path, --header or credential flags"))
		}
		if raw, err = readDecisionBody(fl.input); err != nil {
			return exitErr(exitError, err)
		}
	} else {
		if fl.path == "" {
			return exitErr(exitError, fmt.Errorf("give --path (or --input FILE)"))
		}
		if raw, err = runner.Request(c); err != nil {
			return exitErr(exitError, err)
		}
		for _, h := range fl.headers {
			name, value, ok := strings.Cut(h, ":")
			if !ok || strings.TrimSpace(name) == "" {
				return exitErr(exitError, fmt.Errorf("--header: want 'Name: value'"))
			}
			name = strings.ToLower(strings.TrimSpace(name))
			raw.Headers[name] = append(raw.Headers[name], strings.TrimSpace(value))
		}
	}

	dec, in, decided := runner.Decide(ctx, raw)
	ex := evalReport{Decision: dec}
	if decided {
		doc, err := decisiontable.InputDocument(in)
		if err != nil {
			return exitErr(exitError, err)
		}
		ev, err := decisiontable.NewEvaluator(ctx, b, caps)
		if err != nil {
			return exitErr(exitError, err)
		}
		o, err := ev.Evaluate(ctx, doc, true)
		switch {
		case err != nil:
			ex.Problem = "explaining the decision: " + err.Error()
		case o.Decision.Allow != dec.Allow || o.Decision.Status != dec.Status:
			ex.Problem = fmt.Sprintf("the explanation was evaluated apart and decided allow=%v status=%d: it may not match", o.Decision.Allow, o.Decision.Status)
		}
		ex.Input, ex.Route, ex.Checks = o.Input, o.Route, o.Checks
	} else {
		ex.Problem = "the request was refused before the policy ran"
	}
	if fl.format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(ex); err != nil {
			return exitErr(exitError, err)
		}
		return nil
	}
	writeEvalText(out, ex)
	return nil
}

// evalReport is what eval prints.
type evalReport struct {
	Decision decision.Decision `json:"decision"`
	Input    map[string]any    `json:"input,omitempty"`
	Route    any               `json:"route,omitempty"`
	Checks   []any             `json:"checks"`
	Problem  string            `json:"problem,omitempty"`
}

func writeEvalText(out io.Writer, ex evalReport) {
	d := ex.Decision
	verdict := "DENY"
	if d.Allow {
		verdict = "ALLOW"
	}
	fmt.Fprintf(out, "decision:   %s, status %d, reasons %s (policy revision %s)\n", verdict, d.Status, jsonLine(d.Reasons), d.PolicyRevision)
	if len(d.Headers) > 0 {
		fmt.Fprintf(out, "headers:    %s\n", jsonLine(d.Headers))
	}
	if req, ok := ex.Input["request"].(map[string]any); ok {
		fmt.Fprintf(out, "request:    %v %v (host %v)\n", req["method"], req["path"], req["host"])
	}
	if cr, ok := ex.Input["credential"].(map[string]any); ok {
		line := fmt.Sprintf("%v", cr["status"])
		if t, ok := cr["type"]; ok && t != nil && t != "" && t != "none" {
			line += fmt.Sprintf(", %v in %v", t, cr["placement"])
		}
		if e, ok := cr["error"]; ok && e != nil && e != "" {
			line += fmt.Sprintf(", error %v", e)
		}
		fmt.Fprintf(out, "credential: %s\n", line)
	}
	if id, ok := ex.Input["identity"].(map[string]any); ok {
		fmt.Fprintf(out, "identity:   %s\n", jsonLine(id))
	}
	switch r := ex.Route.(type) {
	case nil:
		fmt.Fprintln(out, "route:      (the policy does not say)")
	case map[string]any:
		if r["matched"] == false {
			fmt.Fprintln(out, "route:      none matches")
			break
		}
		fmt.Fprintf(out, "route:      #%v %v: %v %v, sensitivity %v", r["index"], r["id"], jsonLine(r["methods"]), r["template"], r["sensitivity"])
		for _, k := range []string{"scopes", "roles", "owner"} {
			if v, ok := r[k]; ok {
				fmt.Fprintf(out, ", %s %s", k, jsonLine(v))
			}
		}
		if p, ok := r["params"].(map[string]any); ok && len(p) > 0 {
			fmt.Fprintf(out, ", params %s", jsonLine(p))
		}
		fmt.Fprintln(out)
	default:
		fmt.Fprintf(out, "route:      %s\n", jsonLine(r))
	}
	switch {
	case ex.Checks == nil:
		fmt.Fprintln(out, "checks:     (the policy does not expose its violations)")
	case len(ex.Checks) == 0:
		fmt.Fprintln(out, "checks:     every check passed")
	default:
		fmt.Fprintf(out, "checks:     %d failed (the first in precedence decides)\n", len(ex.Checks))
		for _, c := range ex.Checks {
			fmt.Fprintf(out, "  - %s\n", jsonLine(c))
		}
	}
	if ex.Problem != "" {
		fmt.Fprintf(out, "note:       %s\n", ex.Problem)
	}
}
