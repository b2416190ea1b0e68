package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// version, when set at build time with -ldflags "-X main.version=v1.2.3",
// overrides the module version from the build information.
var version = ""

// opaModule is the module path whose version `tollgate version` reports.
const opaModule = "github.com/open-policy-agent/opa"

// buildVersion is what `tollgate version` and `tollgate --version` print,
// read from the binary's build information.
type buildVersion struct {
	Version  string // module version ("v1.2.3"), or "dev" for a build from a work tree
	Revision string // vcs.revision
	Time     string // vcs.time, the commit's time
	Modified bool   // vcs.modified: built from a tree with uncommitted changes
	OPA      string // the embedded OPA's module version
	Go       string // the Go toolchain
	Platform string // GOOS/GOARCH
}

// readBuildVersion reads the build information of the running binary.
func readBuildVersion() buildVersion {
	bi, _ := debug.ReadBuildInfo()
	return versionFrom(bi, version)
}

// versionFrom extracts a buildVersion from bi (nil when the binary has
// none); override, when set, replaces the module version.
func versionFrom(bi *debug.BuildInfo, override string) buildVersion {
	v := buildVersion{Version: "dev", OPA: "unknown", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		if m := bi.Main.Version; m != "" && m != "(devel)" {
			v.Version = m
		}
		if bi.GoVersion != "" {
			v.Go = bi.GoVersion
		}
		for _, d := range bi.Deps {
			if d.Path == opaModule {
				v.OPA = d.Version
				if d.Replace != nil && d.Replace.Version != "" {
					v.OPA = d.Replace.Version
				}
			}
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Revision = s.Value
			case "vcs.time":
				v.Time = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			case "GOOS":
				v.Platform = s.Value + "/" + v.Platform[strings.IndexByte(v.Platform, '/')+1:]
			case "GOARCH":
				v.Platform = v.Platform[:strings.IndexByte(v.Platform, '/')+1] + s.Value
			}
		}
	}
	if override != "" {
		v.Version = override
	}
	return v
}

// String renders the version on one line:
//
//	tollgate v1.2.3 (commit 0123456789ab, 2026-12-04T17:00:00Z, modified; opa v1.22.3; go1.26.8 linux/amd64)
func (v buildVersion) String() string {
	var b strings.Builder
	b.WriteString("tollgate ")
	b.WriteString(v.Version)
	b.WriteString(" (")
	if v.Revision != "" {
		rev := v.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		b.WriteString("commit " + rev)
		if v.Time != "" {
			b.WriteString(", " + v.Time)
		}
		if v.Modified {
			b.WriteString(", modified")
		}
		b.WriteString("; ")
	}
	fmt.Fprintf(&b, "opa %s; %s %s)", v.OPA, v.Go, v.Platform)
	return b.String()
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print Tollgate's version, commit, and the OPA and Go versions it was built with",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), readBuildVersion())
			return err
		},
	}
}
