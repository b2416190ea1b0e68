package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const demoPolicy = `package demo

allow if input.user == "alice"

double(x) := x * 2

uncovered(x) := x + 1

test_allow if allow with input as {"user": "alice"}

test_deny if not allow with input as {"user": "bob"}
`

const failingTest = `package demo

test_double if {
	got := double(3)
	got == 7
}
`

// writeTree writes files (name → content) under a new temporary directory.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// runCLI runs the tollgate command line in process and returns its output,
// and its exit status as main would compute it.
func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	if err != nil {
		out.WriteString("tollgate: " + err.Error() + "\n")
		return out.String(), exitCode(err)
	}
	return out.String(), 0
}

func TestPolicyTest(t *testing.T) {
	passing := writeTree(t, map[string]string{"demo.rego": demoPolicy})
	failing := writeTree(t, map[string]string{"demo.rego": demoPolicy, "double_test.rego": failingTest})
	broken := writeTree(t, map[string]string{"demo.rego": "package demo\n\nallow if {\n"})
	empty := writeTree(t, map[string]string{"demo.rego": "package demo\n\nallow := true\n"})
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     []string // substrings of the output
		notWant  []string
	}{
		{"passing", []string{"test", passing}, 0, []string{"PASS: 2/2"}, []string{"FAIL"}},
		{"verbose lists every test", []string{"test", "-v", passing}, 0, []string{"data.demo.test_allow: PASS", "data.demo.test_deny: PASS"}, nil},
		{"a failing test shows the expression and its values", []string{"test", failing}, 2,
			[]string{"data.demo.test_double: FAIL", "got == 7", "6", "FAIL: 1/3", "1 of 3 tests failed"}, nil},
		{"--run selects tests", []string{"test", failing, "--run", "test_allow"}, 0, []string{"PASS: 1/1"}, []string{"test_double"}},
		{"coverage above the threshold", []string{"test", passing, "--coverage", "--threshold", "50"}, 0, []string{"coverage: ", "threshold 50.00%"}, nil},
		{"coverage below the threshold", []string{"test", passing, "--threshold", "99"}, 2,
			[]string{"not covered: ", "demo.rego:", "is below the threshold 99.00%"}, nil},
		{"a policy that does not parse", []string{"test", broken}, 1, []string{"load policies"}, nil},
		{"no tests", []string{"test", empty}, 1, []string{"no tests found"}, nil},
		{"a bad format", []string{"test", passing, "--format", "xml"}, 1, []string{`--format "xml"`}, nil},
		{"a bad threshold", []string{"test", passing, "--threshold", "101"}, 1, []string{"--threshold 101"}, nil},
		{"a bad regex", []string{"test", passing, "--run", "("}, 1, []string{"--run"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, code := runCLI(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit status %d, want %d; output:\n%s", code, tt.wantCode, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestPolicyTestFormats(t *testing.T) {
	failing := writeTree(t, map[string]string{"demo.rego": demoPolicy, "double_test.rego": failingTest})

	t.Run("json", func(t *testing.T) {
		out, code := runCLI(t, "test", failing, "--format", "json")
		if code != 2 {
			t.Fatalf("exit status %d, want 2", code)
		}
		var results []struct {
			Name string `json:"name"`
			Fail bool   `json:"fail"`
		}
		if err := json.Unmarshal([]byte(strings.SplitN(out, "tollgate:", 2)[0]), &results); err != nil {
			t.Fatalf("not OPA's JSON: %v\n%s", err, out)
		}
		fails := map[string]bool{}
		for _, r := range results {
			fails[r.Name] = r.Fail
		}
		if len(results) != 3 || !fails["test_double"] || fails["test_allow"] {
			t.Errorf("results %+v", results)
		}
	})

	t.Run("junit", func(t *testing.T) {
		out, code := runCLI(t, "test", failing, "--format", "junit")
		if code != 2 {
			t.Fatalf("exit status %d, want 2", code)
		}
		var doc junitSuites
		if err := xml.Unmarshal([]byte(strings.SplitN(out, "tollgate:", 2)[0]), &doc); err != nil {
			t.Fatalf("not XML: %v\n%s", err, out)
		}
		if doc.Tests != 3 || doc.Failures != 1 || len(doc.Suites) != 1 || doc.Suites[0].Name != "data.demo" {
			t.Fatalf("suites %+v", doc)
		}
		for _, c := range doc.Suites[0].Cases {
			if (c.Failure != nil) != (c.Name == "test_double") {
				t.Errorf("case %s: failure %v", c.Name, c.Failure)
			}
			if c.Failure != nil && !strings.Contains(c.Failure.Text, "got == 7") {
				t.Errorf("failure text lacks the expression: %q", c.Failure.Text)
			}
		}
	})

	t.Run("json coverage", func(t *testing.T) {
		passing := writeTree(t, map[string]string{"demo.rego": demoPolicy})
		out, code := runCLI(t, "test", passing, "--coverage", "--format", "json")
		if code != 0 {
			t.Fatalf("exit status %d\n%s", code, out)
		}
		var rep struct {
			Coverage float64 `json:"coverage"`
			Files    map[string]any
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Coverage <= 0 || rep.Coverage >= 100 || len(rep.Files) != 1 {
			t.Errorf("coverage report %+v, %v:\n%s", rep, err, out)
		}
	})
}

// TestPolicyTestAgreesWithOPA runs the same policies through 'tollgate test'
// and a real 'opa test' (built by ./test/run into test/.bin): both pass or
// both fail, with the same counts.
func TestPolicyTestAgreesWithOPA(t *testing.T) {
	opa, err := exec.LookPath("opa")
	if err != nil {
		if os.Getenv("TOLLGATE_E2E") != "" {
			t.Fatal("opa is not on PATH (./test/run builds it into test/.bin)")
		}
		t.Skip("opa is not on PATH")
	}
	policies, err := filepath.Abs("../../policies")
	if err != nil {
		t.Fatal(err)
	}
	failing := writeTree(t, map[string]string{"demo.rego": demoPolicy, "double_test.rego": failingTest})
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"the repository's policies", []string{"--bundle", policies}},
		{"a policy with a failing test", []string{failing}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opaOut, opaErr := exec.Command(opa, append([]string{"test"}, tc.args...)...).CombinedOutput()
			opaCode := 0
			if ee, ok := opaErr.(*exec.ExitError); ok {
				opaCode = ee.ExitCode()
			} else if opaErr != nil {
				t.Fatal(opaErr)
			}
			out, code := runCLI(t, append([]string{"test"}, tc.args...)...)
			if code != opaCode {
				t.Errorf("tollgate test exit %d, opa test exit %d\ntollgate:\n%s\nopa:\n%s", code, opaCode, out, opaOut)
			}
			if got, want := summary(out), summary(string(opaOut)); got != want || got == "" {
				t.Errorf("tollgate test says %q, opa test says %q", got, want)
			}
		})
	}
}

// summary is the PASS/FAIL count lines of a test report.
func summary(out string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "PASS: ") || strings.HasPrefix(l, "FAIL: ") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

func TestFmt(t *testing.T) {
	const messy = "package demo\nallow if {   input.user ==    \"alice\" }\n"
	tests := []struct {
		name      string
		args      []string
		wantCode  int
		want      []string
		rewritten bool
	}{
		{"check lists and changes nothing", []string{"fmt", "--check"}, 2, []string{"demo.rego", "not formatted"}, false},
		{"diff shows the change and changes nothing", []string{"fmt", "--diff"}, 2, []string{"--- ", "+++ ", "-allow if {   input.user", "+allow if input.user == \"alice\""}, false},
		{"default rewrites", []string{"fmt"}, 0, []string{"demo.rego"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeTree(t, map[string]string{"demo.rego": messy, "ok.rego": "package ok\n\nx := 1\n"})
			out, code := runCLI(t, append(tt.args, dir)...)
			if code != tt.wantCode {
				t.Errorf("exit status %d, want %d\n%s", code, tt.wantCode, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "ok.rego") {
				t.Errorf("a formatted file is listed:\n%s", out)
			}
			b, _ := os.ReadFile(filepath.Join(dir, "demo.rego"))
			if rewritten := string(b) != messy; rewritten != tt.rewritten {
				t.Errorf("file rewritten: %v, want %v:\n%s", rewritten, tt.rewritten, b)
			}
			if tt.rewritten {
				if out, code := runCLI(t, "fmt", "--check", dir); code != 0 {
					t.Errorf("after fmt, --check exits %d:\n%s", code, out)
				}
			}
		})
	}

	t.Run("a file that does not parse", func(t *testing.T) {
		dir := writeTree(t, map[string]string{"bad.rego": "package demo\nallow if {\n"})
		out, code := runCLI(t, "fmt", "--check", dir)
		if code != 1 || !strings.Contains(out, "bad.rego") {
			t.Errorf("exit status %d, want 1 naming the file:\n%s", code, out)
		}
	})
}
