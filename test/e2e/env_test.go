package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/authn/authntest"
)

// env is what the whole suite shares: the test issuer, the upstream, the
// API keys, the main tollgate instance, and the record of every secret used
// and every response body received (for the leak check at the end).
type env struct {
	issuer   *authntest.Issuer
	upstream *upstream
	keysFile string
	keys     map[string]apiKey // by name: "billing", "noscope"
	tg       *tollgate
	client   *http.Client

	mu       sync.Mutex
	secrets  []string          // raw tokens and API keys the run used
	captured map[string][]byte // responses and logs, by what they are
	files    []string          // files to scan at the end: the key file
}

// apiKey is a key made by `tollgate apikey new`.
type apiKey struct {
	ID, Raw, Owner string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{
		issuer:   authntest.NewIssuer(t),
		upstream: newUpstream(t),
		keysFile: filepath.Join(t.TempDir(), "keys.yaml"),
		keys:     map[string]apiKey{},
		client:   &http.Client{Timeout: 30 * time.Second},
		captured: map[string][]byte{},
	}
	// Published keys for algorithms outside the configured allow-list, so
	// that their tokens fail on the allow-list and not on a missing key.
	e.issuer.AddKey("ES384")
	e.issuer.AddKey("EdDSA")

	e.scanFile(e.keysFile)
	e.keys["billing"] = e.newAPIKey(t, "billing", "products:read")
	e.keys["noscope"] = e.newAPIKey(t, "reporting", "")

	var cfg tollgateConfig
	cfg.TrustedProxies = []string{"127.0.0.1/32"}
	cfg.Issuers = []issuerConfig{{
		Issuer:     e.issuer.URL(),
		Audiences:  []string{authntest.Audience},
		Algorithms: []string{"RS256", "ES256"},
	}}
	cfg.APIKeys.File = e.keysFile
	cfg.DecisionLog.Enabled = true
	// debug: the strictest leak check covers every log line tollgate can write.
	cfg.Log.Level = "debug"
	e.tg = startTollgate(t, "tollgate", cfg)
	return e
}

var addedKeyLine = regexp.MustCompile(`(?m)^Added API key ([a-z2-7]+) to `)

// newAPIKey runs `tollgate apikey new` and takes the key from the last line
// of its output.
func (e *env) newAPIKey(t *testing.T, owner, scopes string) apiKey {
	t.Helper()
	args := []string{"apikey", "new", "--owner", owner, "--file", e.keysFile}
	if scopes != "" {
		args = append(args, "--scopes", scopes)
	}
	out := runTollgate(t, args...)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	raw := strings.TrimSpace(lines[len(lines)-1])
	m := addedKeyLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("apikey new: no %q line in its output", addedKeyLine)
	}
	if !strings.HasPrefix(raw, "tgk_"+m[1]+"_") {
		t.Fatalf("apikey new: the last line is not a key with id %s", m[1])
	}
	e.secret(raw)
	file, err := os.ReadFile(e.keysFile)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(file, []byte(raw)) {
		t.Fatalf("%s holds the raw API key", e.keysFile)
	}
	if !bytes.Contains(file, []byte(m[1])) {
		t.Fatalf("%s does not name the new key's id %s", e.keysFile, m[1])
	}
	return apiKey{ID: m[1], Raw: raw, Owner: owner}
}

// secret records a raw credential; the leak check looks for it everywhere.
func (e *env) secret(s string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.secrets = append(e.secrets, s)
	return s
}

// scanFile adds a file to the leak check, read when it runs.
func (e *env) scanFile(path string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.files = append(e.files, path)
}

// mint signs claims (the issuer's Claims(sub) with extra merged in) and
// records the token as a secret.
func (e *env) mint(sub string, extra map[string]any, opts ...authntest.MintOption) string {
	claims := e.issuer.Claims(sub)
	maps.Copy(claims, extra)
	return e.secret(e.issuer.Mint(claims, opts...))
}

// recordResponse keeps a response's header and body for the leak check.
func (e *env) recordResponse(what string, resp *http.Response, body []byte) {
	var b bytes.Buffer
	_ = resp.Header.Write(&b)
	b.Write(body)
	e.record("response to "+what, b.Bytes())
}

// record keeps b, named what, for the leak check.
func (e *env) record(what string, b []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	key := what
	for i := 2; ; i++ {
		if _, dup := e.captured[key]; !dup {
			break
		}
		key = fmt.Sprintf("%s #%d", what, i)
	}
	e.captured[key] = slices.Clone(b)
}

// do sends req, records the response body and returns the response with
// its body read.
func (e *env) do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL.Path, err)
	}
	e.recordResponse(req.Method+" "+req.URL.String(), resp, body)
	return resp, body
}

// ---------------------------------------------------------------------------
// POST /v1/decision

// decisionRequest is the body of POST /v1/decision.
type decisionRequest struct {
	Method   string              `json:"method"`
	Path     string              `json:"path"`
	Host     string              `json:"host,omitempty"`
	Scheme   string              `json:"scheme,omitempty"`
	Headers  map[string][]string `json:"headers,omitempty"`
	SourceIP string              `json:"source_ip,omitempty"`
}

// decisionResponse is the answer of POST /v1/decision.
type decisionResponse struct {
	DecisionID     string            `json:"decision_id"`
	Allow          bool              `json:"allow"`
	Status         int               `json:"status"`
	Reasons        []string          `json:"reasons"`
	Headers        map[string]string `json:"headers"`
	PolicyRevision string            `json:"policy_revision"`
}

// decide asks tg for a decision and checks the answer's invariants: HTTP 200,
// JSON, a decision id and a policy revision, and no headers on a deny.
func (e *env) decide(t *testing.T, tg *tollgate, dr decisionRequest) decisionResponse {
	t.Helper()
	b, err := json.Marshal(dr)
	if err != nil {
		t.Fatal(err)
	}
	status, ctype, body := e.postDecision(t, tg, "application/json", b)
	if status != http.StatusOK {
		t.Fatalf("POST /v1/decision %s %q: HTTP %d, want 200: %s", dr.Method, dr.Path, status, body)
	}
	if !strings.HasPrefix(ctype, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ctype)
	}
	var d decisionResponse
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatalf("decision is not JSON: %v: %s", err, body)
	}
	if d.DecisionID == "" {
		t.Errorf("decision without decision_id: %s", body)
	}
	if d.PolicyRevision == "" {
		t.Errorf("decision without policy_revision: %s", body)
	}
	if !d.Allow && len(d.Headers) > 0 {
		t.Errorf("a deny carries upstream headers %v", d.Headers)
	}
	if d.Allow && d.Status != http.StatusOK {
		t.Errorf("an allow with status %d", d.Status)
	}
	if !d.Allow && d.Status < 400 {
		t.Errorf("a deny with status %d", d.Status)
	}
	return d
}

func (e *env) postDecision(t *testing.T, tg *tollgate, ctype string, body []byte) (status int, respType string, respBody []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, tg.url+"/v1/decision", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, rb := e.do(t, req)
	return resp.StatusCode, resp.Header.Get("Content-Type"), rb
}

// ---------------------------------------------------------------------------
// upstream

// upstream is the API behind the gateway: it answers 200 with a JSON echo of
// the request (method, path, headers except the credential-carrying ones)
// and remembers the X-Test-Id of every request that reached it.
type upstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen map[string]echo
}

// echo is the upstream's answer.
type echo struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{seen: map[string]echo{}}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ec := echo{Method: r.Method, Path: r.URL.Path, Headers: map[string]string{}}
		for name, v := range r.Header {
			switch name {
			case "Authorization", "Cookie", "X-Api-Key":
				continue // credentials: an echo would put them in a response body
			}
			ec.Headers[strings.ToLower(name)] = strings.Join(v, ", ")
		}
		if id := r.Header.Get("X-Test-Id"); id != "" {
			u.mu.Lock()
			u.seen[id] = ec
			u.mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ec)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// reached reports whether a request with this X-Test-Id got to the upstream.
func (u *upstream) reached(id string) (echo, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	ec, ok := u.seen[id]
	return ec, ok
}

func newTestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
