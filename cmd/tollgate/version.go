package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print Tollgate's version and the OPA version it embeds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opa := "unknown"
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, m := range bi.Deps {
					if m.Path == "github.com/open-policy-agent/opa" {
						opa = m.Version
					}
				}
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "tollgate %s (opa %s, %s %s/%s)\n", version, opa, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}
