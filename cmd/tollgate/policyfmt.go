package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
	"github.com/spf13/cobra"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/format"
)

type fmtFlags struct {
	check bool
	diff  bool
}

func newFmtCommand() *cobra.Command {
	var fl fmtFlags
	cmd := &cobra.Command{
		Use:   "fmt [PATH...]",
		Short: "Format Rego files with OPA's formatter",
		Long: `Format the .rego files under each PATH (default ".") with OPA's formatter,
exactly as 'opa fmt' does, rewriting them in place and listing the files it
changed.

--check changes nothing: it lists the files that are not formatted and exits
with status 2 if there is any (for CI). --diff changes nothing either: it
prints a unified diff of what formatting would change, and exits 2 if there
is any. Exit status 1: a file does not parse.`,
		Example: `  tollgate fmt ./policies
  tollgate fmt --check ./policies
  tollgate fmt --diff ./policies`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{"."}
			}
			return runFmt(args, fl, cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&fl.check, "check", false, "list unformatted files and exit 2 if any; change nothing")
	cmd.Flags().BoolVar(&fl.diff, "diff", false, "print a unified diff of the changes and exit 2 if any; change nothing")
	return cmd
}

func runFmt(paths []string, fl fmtFlags, out io.Writer) error {
	files, err := regoFiles(paths)
	if err != nil {
		return exitErr(exitError, err)
	}
	var unformatted []string
	var errs []error
	for _, file := range files {
		src, err := os.ReadFile(file)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		formatted, err := format.SourceWithOpts(file, src, format.Opts{RegoVersion: ast.RegoV1})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", file, err))
			continue
		}
		if bytes.Equal(src, formatted) {
			continue
		}
		unformatted = append(unformatted, file)
		switch {
		case fl.diff:
			d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
				A: difflib.SplitLines(string(src)), B: difflib.SplitLines(string(formatted)),
				FromFile: file, ToFile: file + " (formatted)", Context: 3,
			})
			if err != nil {
				return exitErr(exitError, err)
			}
			fmt.Fprint(out, d)
		case fl.check:
			fmt.Fprintln(out, file)
		default:
			info, err := os.Stat(file)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if err := os.WriteFile(file, formatted, info.Mode().Perm()); err != nil {
				errs = append(errs, err)
				continue
			}
			fmt.Fprintln(out, file)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return exitErr(exitError, err)
	}
	if (fl.check || fl.diff) && len(unformatted) > 0 {
		return exitErr(exitFailed, fmt.Errorf("%d file(s) not formatted; run 'tollgate fmt' on them", len(unformatted)))
	}
	return nil
}

// regoFiles lists the .rego files named by paths, walking directories.
func regoFiles(paths []string) ([]string, error) {
	var files []string
	for _, p := range paths {
		err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && strings.HasSuffix(path, ".rego") {
				files = append(files, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return files, nil
}
