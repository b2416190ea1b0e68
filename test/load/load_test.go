package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
)

// TestMain lets the test binary be the ceiling server too, as the harness
// starts it (os.Executable with ceilingEnv set).
func TestMain(m *testing.M) {
	if addr := os.Getenv(ceilingEnv); addr != "" {
		if err := serveCeiling(addr); err != nil {
			os.Stderr.WriteString("ceiling: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSmoke runs the whole harness briefly (every server, the NGINX
// scenario when nginx is installed, or always under TOLLGATE_E2E=1) and
// checks that it answers correctly and writes its report and chart, so that
// the harness cannot rot. TOLLGATE_LOAD_TOLLGATE=BIN runs a prebuilt
// tollgate instead of building ./cmd/tollgate.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers and builds tollgate")
	}
	dir := t.TempDir()
	args := []string{"-duration", "300ms", "-users", "50", "-rounds", "1", "-warmup", "0", "-concurrency", "4,8",
		"-out", filepath.Join(dir, "BENCHMARKS.md"), "-chart", filepath.Join(dir, "benchmarks.png")}
	if os.Getenv("TOLLGATE_E2E") == "1" {
		args = append(args, "-nginx", "on")
	}
	if bin := os.Getenv("TOLLGATE_LOAD_TOLLGATE"); bin != "" {
		args = append(args, "-tollgate", bin)
	}
	// The hand-kept in-process section of an existing report survives.
	const kept = "\n## In process\n\nfigures from test/bench\n"
	if err := os.WriteFile(filepath.Join(dir, "BENCHMARKS.md"), []byte("# old\n\nold table\n"+kept), 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := parseFlags(args)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(t.Context(), o, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"| ceiling | 4 |", "| opa | 8 |", "| tollgate | 4 |", "| tollgate | 8 |"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the table has no row %q:\n%s", want, out.String())
		}
	}
	// Each server's row has its own CPU and its clients' CPU per 1,000
	// decisions, both measured.
	for line := range strings.Lines(out.String()) {
		cells := strings.Split(strings.TrimSpace(line), "|")
		if len(cells) < 10 || !slices.Contains([]string{" ceiling ", " opa ", " tollgate "}, cells[1]) {
			continue
		}
		for _, c := range []int{7, 8} { // CPU s / 1k decisions, harness CPU s / 1k
			if v, err := strconv.ParseFloat(strings.TrimSpace(cells[c]), 64); err != nil || v <= 0 {
				t.Errorf("row %q: column %d is %q, want a positive number of seconds", strings.TrimSpace(line), c, cells[c])
			}
		}
	}
	// Tollgate's decision cache is read from its metrics around each run:
	// what it answered and what the policy evaluated add up to the
	// decisions the harness counted. Without a warm-up, the first run
	// starts with an empty cache, so some are evaluated; the cache is kept
	// from one run to the next, so a later run may evaluate none.
	cacheLine := regexp.MustCompile(`tollgate, (\d+) clients: of ([\d,]+) decisions, the decision cache answered ([\d,]+) \([\d.]+%\) and the policy evaluated ([\d,]+) `)
	lines := cacheLine.FindAllStringSubmatch(out.String(), -1)
	if len(lines) != 2 {
		t.Errorf("the report has %d lines on Tollgate's decision cache, want one per concurrency:\n%s", len(lines), out.String())
	}
	evaluated := 0
	for _, l := range lines {
		num := func(s string) int { n, _ := strconv.Atoi(strings.ReplaceAll(s, ",", "")); return n }
		decisions, hits, misses := num(l[2]), num(l[3]), num(l[4])
		if hits+misses != decisions || hits == 0 || decisions == 0 {
			t.Errorf("%s clients: %d answered + %d evaluated, want the %d decisions, some answered", l[1], hits, misses, decisions)
		}
		evaluated += misses
	}
	if evaluated == 0 {
		t.Error("the policy evaluated no decision, though the first run started with an empty cache")
	}
	md, err := os.ReadFile(filepath.Join(dir, "BENCHMARKS.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(md, out.Bytes()) || !bytes.Contains(md, []byte("](benchmarks.png)")) {
		t.Errorf("BENCHMARKS.md lacks the table or the chart:\n%s", md)
	}
	if !bytes.HasSuffix(md, []byte(kept)) || bytes.Contains(md, []byte("old table")) {
		t.Errorf("BENCHMARKS.md did not keep the in-process section (and only it):\n%s", md)
	}
	png, err := os.ReadFile(filepath.Join(dir, "benchmarks.png"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Error("the chart is not a PNG")
	}
}

// TestProfiles runs Tollgate alone under the mix and takes its CPU and
// allocation profiles from the admin listener, as a developer chasing a
// hot spot does.
func TestProfiles(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers and builds tollgate")
	}
	dir := t.TempDir()
	cpu, mem := filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "mem.pprof")
	args := []string{"-servers", "tollgate", "-out", "", "-chart", "", "-duration", "1s", "-users", "20", "-rounds", "1",
		"-warmup", "0", "-concurrency", "4", "-nginx", "off", "-cpuprofile", cpu, "-memprofile", mem}
	if bin := os.Getenv("TOLLGATE_LOAD_TOLLGATE"); bin != "" {
		args = append(args, "-tollgate", bin)
	}
	o, err := parseFlags(args)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(t.Context(), o, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "| tollgate | 4 |") || strings.Contains(out.String(), "| opa |") {
		t.Errorf("want a table of Tollgate alone:\n%s", out.String())
	}
	for _, p := range []string{cpu, mem} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) { // pprof's profiles are gzipped protocol buffers
			t.Errorf("%s is not a profile: %.40q", filepath.Base(p), b)
		}
	}
}

func TestParseShares(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"60,10,10,15,5", true},
		{"0,0,0,0,100", true},
		{"100,0,0,0,0", true},
		{"60,10,10,15,6", false}, // 101
		{"60,10,10,15", false},   // too few
		{"60,10,10,15,5,0", false},
		{"60,10,10,20,-0x", false},
		{"-5,20,20,60,5", false},
		{"", false},
	} {
		_, err := parseShares(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("parseShares(%q): err %v, want ok %t", tc.in, err, tc.ok)
		}
	}
}

func TestParseFlagsRefuses(t *testing.T) {
	for _, args := range [][]string{
		{"-users", "1"},
		{"-concurrency", "16,x"},
		{"-concurrency", "0"},
		{"-duration", "0s"},
		{"-rounds", "0"},
		{"-nginx", "maybe"},
		{"-decision-timeout", "-1s"},
		{"-mix", "50,50,0,0,1"},
		{"-servers", "tollgate"}, // would overwrite docs/BENCHMARKS.md with a part of the comparison
		{"-servers", "tollgate,envoy", "-out", ""},
		{"extra"},
	} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("parseFlags(%q) accepted it", args)
		}
	}
}

// testUsers are users with fake tokens: the generator does not look into them.
func testUsers(n int) []user {
	us := make([]user, n)
	for i := range us {
		us[i] = user{subject: "user-" + string(rune('a'+i%26)) + strings.Repeat("x", i/26), customer: string(rune('0'+i%10)) + strings.Repeat("7", i/10+1), token: "h.p.s" + strings.Repeat("q", i)}
	}
	return us
}

// TestGenerator checks the mix: shares within a few percent of what was
// asked, every call's expectation consistent with what it asks, the other
// user's record never the caller's own, request ids all distinct.
func TestGenerator(t *testing.T) {
	for _, tc := range []struct {
		name   string
		users  int
		shares shares
	}{
		{"default", 200, defaultShares},
		{"two users, all other-record", 2, shares{0, 0, 100, 0, 0}},
		{"even", 50, shares{20, 20, 20, 20, 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			users := testUsers(tc.users)
			owner := map[string]string{} // subject -> customer
			for _, u := range users {
				owner[u.subject] = u.customer
			}
			g := &generator{users: users, apiKey: "tgk_id_secret", keyOwner: "catalog", shares: tc.shares, requestIDs: true,
				prefix: "t-", rnd: rand.New(rand.NewPCG(7, uint64(tc.users)))}
			const n = 20_000
			var counts [numKinds]int
			ids := map[string]bool{}
			for range n {
				c := g.next()
				counts[c.kind]++
				id := requestID(&c)
				if id == "" || ids[id] {
					t.Fatalf("request id %q empty or repeated", id)
				}
				ids[id] = true
				var doc struct {
					Method, Path string
					Headers      map[string]string
				}
				if err := json.Unmarshal(c.decisionJSON(nil), &doc); err != nil || doc.Path != c.target || len(doc.Headers) != len(c.headers)/2 {
					t.Fatalf("decisionJSON of %+v: %v %+v", c, err, doc)
				}
				bearer := strings.TrimPrefix(doc.Headers["authorization"], "Bearer ")
				var caller *user
				for i := range users {
					if users[i].token == bearer {
						caller = &users[i]
					}
				}
				switch c.kind {
				case ownOrders, ownRecord:
					if caller == nil || !strings.HasPrefix(c.target, "/customers/"+caller.customer) || !c.allow || c.subject != caller.subject {
						t.Fatalf("%s: %+v", c.kind, c)
					}
				case otherRecord:
					if caller == nil || c.target == "/customers/"+caller.customer || c.allow || c.status != 403 || c.subject != "" {
						t.Fatalf("%s: %+v", c.kind, c)
					}
				case products:
					key := doc.Headers["x-api-key"]
					if !c.allow || (key != "" && c.subject != "catalog") || (key == "" && (caller == nil || c.subject != caller.subject)) {
						t.Fatalf("%s: %+v", c.kind, c)
					}
				case public:
					if !c.allow || c.subject != "" || doc.Headers["authorization"] != "" || doc.Headers["x-api-key"] != "" {
						t.Fatalf("%s: %+v", c.kind, c)
					}
				}
			}
			for k, got := range counts {
				want := tc.shares[k] * n / 100
				if d := got - want; d > n/50 || d < -n/50 {
					t.Errorf("%s: %d calls, want about %d", kind(k), got, want)
				}
			}
		})
	}
}

// TestCheckCatchesWrongAnswers: every way a decision can differ from the
// expectation is a wrong answer.
func TestCheckCatchesWrongAnswers(t *testing.T) {
	allow := call{kind: ownRecord, allow: true, status: 200, subject: "user-1"}
	deny := call{kind: otherRecord, allow: false, status: 403}
	for _, tc := range []struct {
		name  string
		c     call
		d     decisionAnswer
		wrong bool
	}{
		{"allow as expected", allow, decisionAnswer{Allow: true, Status: 200, Headers: idHead{UserID: "user-1"}}, false},
		{"deny as expected", deny, decisionAnswer{Allow: false, Status: 403}, false},
		{"deny instead of allow", allow, decisionAnswer{Allow: false, Status: 403}, true},
		{"allow instead of deny", deny, decisionAnswer{Allow: true, Status: 200}, true},
		{"another user", allow, decisionAnswer{Allow: true, Status: 200, Headers: idHead{UserID: "user-2"}}, true},
		{"no identity", allow, decisionAnswer{Allow: true, Status: 200}, true},
		{"401 instead of 403", deny, decisionAnswer{Allow: false, Status: 401}, true},
		{"identity on a deny", deny, decisionAnswer{Allow: false, Status: 403, Headers: idHead{UserID: "user-1"}}, true},
	} {
		err := tc.d.check(&tc.c)
		if (err != nil) != tc.wrong {
			t.Errorf("%s: check = %v, want wrong %t", tc.name, err, tc.wrong)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 1000; i++ {
		d = append(d, time.Duration(i))
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500}, {0.99, 990}, {0.999, 999}, {1, 1000}, {0, 1}} {
		if got := percentile(d, tc.q); got != tc.want {
			t.Errorf("percentile(%v) = %d, want %d", tc.q, got, tc.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile of nothing = %d", got)
	}
}

// TestProcStats reads this process's own CPU time and peak RSS, which
// must grow with work and allocation.
func TestProcStats(t *testing.T) {
	pid := os.Getpid()
	before, err := cpuSeconds(pid)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		_ = rand.Int() // burn CPU
	}
	after, err := cpuSeconds(pid)
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Errorf("CPU seconds did not grow: %v then %v", before, after)
	}
	rss, err := peakRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	if rss < int64(len(buf)) {
		t.Errorf("peak RSS %d, below the %d bytes just written", rss, len(buf))
	}
	if _, err := cpuSeconds(-1); err == nil {
		t.Error("cpuSeconds of no process succeeded")
	}
}

func TestCheckJSONSafe(t *testing.T) {
	for _, s := range []string{`a"b`, `a\b`, "a\nb", "a\x00", "é"} {
		if checkJSONSafe("s", s) == nil {
			t.Errorf("checkJSONSafe(%q) accepted it", s)
		}
	}
	if err := checkJSONSafe("s", "eyJhbGciOi.eyJzdWIi.sig-_"); err != nil {
		t.Error(err)
	}
}

// TestOPAPeerPolicy runs the OPA peer's Rego tests (opa/authz_test.rego)
// with `opa test` on the bundle the harness writes, with the route table of
// policies/, and checks the peer with `opa check --strict` and `opa fmt`.
func TestOPAPeerPolicy(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := ensureOPA(t.Context(), root, "test/.bin/opa")
	if err != nil {
		t.Fatal(err)
	}
	routes, err := routeTable(t.Context(), root, bin)
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join("opa", "authz_test.rego"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := writeOPABundle(dir, routes, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "loadtest", "authz_test.rego"), tests, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"check", "--strict", dir},
		{"fmt", "--list", "--fail", "opa"},
		{"test", "--fail-on-empty", "-v", dir},
	} {
		out, err := exec.CommandContext(t.Context(), bin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("opa %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestDecodeAnswers: the checks read allow, status and x-user-id out of
// whole answers, Tollgate's and OPA's, whatever else they hold.
func TestDecodeAnswers(t *testing.T) {
	c := &call{kind: ownRecord, method: "GET", allow: true, status: 200, subject: "user-1"}
	for _, tc := range []struct {
		body    string
		wrapped bool // OPA's {"result": …}
		ok      bool
	}{
		{`{"decision_id":"0f","allow":true,"status":200,"reasons":[],"headers":{"x-auth-kind":"user","x-user-id":"user-1","x-customer-number":"42"},"policy_revision":"r"}`, false, true},
		{`{"decision_id":"0f","allow":true,"status":200,"reasons":[],"headers":{"x-user-id":"user-2"},"policy_revision":"r"}`, false, false},
		{`{"decision_id":"0f","allow":false,"status":403,"reasons":["not_owner"],"headers":{},"policy_revision":"r"}`, false, false},
		{`{"result":{"allow":true,"status":200,"headers":{"x-user-id":"user-1"}}}`, true, true},
		{`{"result":{"allow":true,"status":200,"headers":{}}}`, true, false},
	} {
		var d decisionAnswer
		var err error
		if tc.wrapped {
			var r struct {
				Result *decisionAnswer `json:"result"`
			}
			err = jsonv2.Unmarshal([]byte(tc.body), &r)
			if r.Result != nil {
				d = *r.Result
			}
		} else {
			err = jsonv2.Unmarshal([]byte(tc.body), &d)
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		if got := d.check(c) == nil; got != tc.ok {
			t.Errorf("%s: check passes = %t, want %t", tc.body, got, tc.ok)
		}
	}
}
