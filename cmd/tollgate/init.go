package main

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/decisionlog"
	"github.com/tollgate/tollgate/pdp/decisiontable"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/policies"
)

// The starter's files that are not the default policy. policy-ci.sh and
// policy.yml are also shipped as examples/ci/ (a test keeps them equal).
var (
	//go:embed initdata/cases.yaml
	starterCases []byte
	//go:embed initdata/policy-ci.sh
	starterCIScript []byte
	//go:embed initdata/policy.yml
	starterWorkflow []byte
)

// starterRevision is the revision of a new starter bundle.
const starterRevision = "starter-1"

func newInitCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "init DIR",
		Short: "Create a starter policy repository",
		Long: `Create DIR (which must not exist or be empty) with everything a team needs
to write, test and ship an access policy:

  policy/                      the bundle: the default rules (authz.rego), their
    .manifest                  unit tests (authz_test.rego), the route table
    authz.rego                 (tollgate/routes/data.json) and a manifest
    authz_test.rego            with revision "` + starterRevision + `"
    tollgate/routes/data.json
  cases/routes.yaml            decision tables for 'tollgate check'
  decisions/sample.jsonl       decisions recorded under the starter policy,
                               for 'tollgate replay' (replace them with a
                               sample of your own decision log)
  policy-ci.sh                 the CI gate for any CI system
  .github/workflows/policy.yml the same gate on GitHub Actions

As created, it passes every step of policy-ci.sh: fmt --check, lint, test
--coverage --threshold 95, check and replay.`,
		Example: `  tollgate init orders-policy && cd orders-policy && TOLLGATE=tollgate sh policy-ci.sh`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runInit(cmd.Context(), args[0], cmd.OutOrStdout())
		},
	}
	return cmd
}

func runInit(ctx context.Context, dir string, out io.Writer) error {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return exitErr(exitError, fmt.Errorf("%s exists and is not empty", dir))
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return exitErr(exitError, err)
	}
	files := map[string][]byte{
		"cases/routes.yaml":            starterCases,
		"policy-ci.sh":                 starterCIScript,
		".github/workflows/policy.yml": starterWorkflow,
	}
	err := fs.WalkDir(policies.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(policies.FS(), p)
		if err != nil {
			return err
		}
		files[path.Join("policy", p)] = b
		return nil
	})
	if err != nil {
		return exitErr(exitError, fmt.Errorf("read the default policy: %w", err))
	}
	manifest, err := json.MarshalIndent(map[string]any{"revision": starterRevision, "roots": []string{"tollgate"}}, "", "  ")
	if err != nil {
		return exitErr(exitError, err)
	}
	files["policy/.manifest"] = append(manifest, '\n')

	for name, b := range files {
		mode := os.FileMode(0o644)
		if path.Ext(name) == ".sh" {
			mode = 0o755
		}
		if err := writeNew(filepath.Join(dir, filepath.FromSlash(name)), b, mode); err != nil {
			return exitErr(exitError, err)
		}
	}
	if err := writeSampleDecisions(ctx, filepath.Join(dir, "policy"), filepath.Join(dir, "decisions", "sample.jsonl")); err != nil {
		return exitErr(exitError, fmt.Errorf("sample decisions: %w", err))
	}
	fmt.Fprintf(out, `Created a starter policy in %s. Next:

  cd %s
  tollgate test --bundle policy --coverage     # the Rego unit tests
  tollgate check --bundle policy cases/*.yaml  # the decision tables
  sh policy-ci.sh                              # everything CI runs

See docs/AUTHORING.md for how to add a route, a rule and its tests.
`, dir, dir)
	return nil
}

func writeNew(name string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeSampleDecisions runs the starter's cases through the starter policy
// with Tollgate's own decision logger writing its events (masked, as a
// server writes them) to file, so that replay has something to replay from
// day one.
func writeSampleDecisions(ctx context.Context, bundleDir, file string) error {
	b, err := bundles.Load(ctx, "dir:"+bundleDir)
	if err != nil {
		return err
	}
	engine := policy.NewEngine(policy.Options{})
	if err := engine.Activate(ctx, b); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	log, err := decisionlog.New(decisionlog.Options{Console: w, BundleName: "policy", Labels: map[string]string{"source": "tollgate init"}})
	if err != nil {
		return err
	}
	if err := log.SetPolicy(ctx, b); err != nil {
		return err
	}
	log.Start()
	runner, err := decisiontable.NewRunner(ctx, engine, decisiontable.Options{Recorders: []pdp.Recorder{log}})
	if err != nil {
		log.Stop(ctx)
		return err
	}
	cases, err := decisiontable.Parse("cases/routes.yaml", starterCases)
	if err != nil {
		log.Stop(ctx)
		return err
	}
	for _, c := range cases {
		raw, err := runner.Request(c)
		if err != nil {
			log.Stop(ctx)
			return err
		}
		runner.Decide(ctx, raw)
	}
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	log.Stop(stopCtx)
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}
