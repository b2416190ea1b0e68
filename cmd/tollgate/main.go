// Command tollgate is Tollgate's CLI: the policy decision point server
// (serve), a development token minter (token), API key management (apikey),
// policy bundles (bundle), the policy author's tools (init, fmt, lint, test,
// check, eval, replay) and version information.
//
// This is the composition root: the only place that reads the configuration
// file and wires the pdp packages together.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tollgate:", err)
		os.Exit(exitCode(err))
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "tollgate",
		Short: "Tollgate: a policy decision point for API identity and access",
		Long: `Tollgate answers, for every API request a gateway forwards to it, whether the
request may through: it finds the request's credential, verifies it (OIDC JWTs,
API keys), evaluates versioned Rego policies with OPA's engine, and answers
allow or deny with a status, reasons and identity headers.

Start with 'tollgate serve --dev' and 'tollgate token --help'; to write a
policy, with 'tollgate init' (docs/AUTHORING.md).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       readBuildVersion().String(),
	}
	root.SetVersionTemplate("{{.Version}}\n") // --version prints what `tollgate version` prints
	root.AddCommand(newServeCommand(), newTokenCommand(), newAPIKeyCommand(), newVersionCommand())
	root.AddCommand(newTestCommand(), newFmtCommand(), newCheckCommand(), newEvalCommand(), newLintCommand(), newInitCommand(), newReplayCommand())
	root.AddCommand(newBundleCommand())
	return root
}
