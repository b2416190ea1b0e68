package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// shBlocks are the ```sh blocks of a markdown file, in order.
var shBlock = regexp.MustCompile("(?ms)^```sh\n(.*?)^```\n")

// TestAuthoringGuide runs the shell steps of docs/AUTHORING.md exactly as
// written, in one shell, with a freshly built tollgate first on PATH: from
// `tollgate init` to a passing CI script.
func TestAuthoringGuide(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	guide, err := os.ReadFile(filepath.Join("..", "..", "docs", "AUTHORING.md"))
	if err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	script.WriteString("set -eu\n")
	blocks := shBlock.FindAllSubmatch(guide, -1)
	if len(blocks) < 6 {
		t.Fatalf("found %d sh blocks in the guide", len(blocks))
	}
	for i, b := range blocks {
		script.WriteString("echo '### step " + string(rune('0'+i%10)) + "'\n")
		script.Write(b[1])
	}
	script.WriteString("test -f .github/workflows/policy.yml\n")

	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "tollgate"), ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	work := t.TempDir()
	cmd := exec.Command("sh", "-c", script.String())
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("the guide's steps failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"Created a starter policy in orders-policy",
		"no findings in policy",
		"insufficient_scope",
		"PASS: 4/4 cases passed",
		"[expected: orders are now routed and need a credential]",
		"==> policy CI passed",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the guide's output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestCITemplates keeps examples/ci equal to what `tollgate init` writes.
func TestCITemplates(t *testing.T) {
	for file, want := range map[string][]byte{
		"policy-ci.sh": starterCIScript,
		"policy.yml":   starterWorkflow,
	} {
		got, err := os.ReadFile(filepath.Join("..", "..", "examples", "ci", file))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("examples/ci/%s differs from cmd/tollgate/initdata/%s: copy it over", file, file)
		}
	}
}
