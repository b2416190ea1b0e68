package main

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionFromBuildInfo(t *testing.T) {
	opa := []*debug.Module{{Path: "github.com/spf13/cobra", Version: "v1.10.2"}, {Path: opaModule, Version: "v1.22.3"}}
	vcs := []debug.BuildSetting{
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
		{Key: "vcs.time", Value: "2026-12-04T17:00:00Z"},
		{Key: "vcs.modified", Value: "true"},
		{Key: "GOOS", Value: "linux"},
		{Key: "GOARCH", Value: "arm64"},
	}
	tests := []struct {
		name     string
		bi       *debug.BuildInfo
		override string
		want     string
	}{
		{
			name: "release from the module proxy",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}, Deps: opa},
			want: "tollgate v1.2.3 (opa v1.22.3; go1.26.8 " + runtime.GOOS + "/" + runtime.GOARCH + ")",
		},
		{
			name: "work tree with uncommitted changes",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Deps: opa, Settings: vcs},
			want: "tollgate dev (commit 0123456789ab, 2026-12-04T17:00:00Z, modified; opa v1.22.3; go1.26.8 linux/arm64)",
		},
		{
			name: "pseudo-version from a commit",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261204170000-0123456789ab"},
				Deps: opa, Settings: vcs[:3]},
			want: "tollgate v0.0.0-20261204170000-0123456789ab (commit 0123456789ab, 2026-12-04T17:00:00Z; opa v1.22.3; go1.26.8 ",
		},
		{
			name:     "ldflags override",
			bi:       &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Deps: opa},
			override: "v9.9.9",
			want:     "tollgate v9.9.9 (opa v1.22.3;",
		},
		{
			name: "replaced OPA",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Deps: []*debug.Module{
				{Path: opaModule, Version: "v1.22.3", Replace: &debug.Module{Path: "../opa", Version: "v1.23.0-rc1"}}}},
			want: "tollgate dev (opa v1.23.0-rc1;",
		},
		{
			name: "no build information",
			want: "tollgate dev (opa unknown; " + runtime.Version(),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := versionFrom(tc.bi, tc.override).String(); !strings.HasPrefix(got, tc.want) {
				t.Errorf("got  %q\nwant %q…", got, tc.want)
			}
		})
	}
}

// TestVersionCommandAndFlag checks that `tollgate version` and
// `tollgate --version` print the same line, stamped from this test
// binary's build information (OPA is among its dependencies).
func TestVersionCommandAndFlag(t *testing.T) {
	cmdOut, err := runCmd(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	flagOut, err := runCmd(t, "--version")
	if err != nil {
		t.Fatal(err)
	}
	if cmdOut != flagOut {
		t.Errorf("version command %q and --version flag %q differ", cmdOut, flagOut)
	}
	if !strings.HasPrefix(cmdOut, "tollgate ") || strings.Contains(cmdOut, "opa unknown") || !strings.Contains(cmdOut, runtime.Version()) {
		t.Errorf("version %q: want the OPA and Go versions", cmdOut)
	}
}
