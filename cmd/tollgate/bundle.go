package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/spf13/cobra"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/pdp/policy"
)

func newBundleCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Build, sign, inspect and verify policy bundles; history, rollback and pinning",
		Long: `Policy bundles are OPA bundles: 'tollgate bundle build' writes what
'opa build' writes (and signs it as 'opa build --signing-key' does), and
Tollgate reads what 'opa build' writes.

history, activate and unpin talk to a running 'tollgate serve' on its admin
listener (admin.listen) with an admin key (scope tollgate:admin) read from
--admin-key-file or the TOLLGATE_ADMIN_KEY environment variable.`,
	}
	cmd.AddCommand(newBundleBuildCommand(), newBundleInspectCommand(), newBundleVerifyCommand())
	cmd.AddCommand(newBundleAdminCommands()...)
	return cmd
}

type bundleBuildFlags struct {
	out, revision, signingKey, signingAlg, keyID, scope string
	policy                                              policyCheckFlags
}

// policyCheckFlags compile a bundle as serve would.
type policyCheckFlags struct {
	query, checkQuery, capabilities string
}

func (f *policyCheckFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.query, "query", "", "decision query (default "+policy.DefaultQuery+")")
	cmd.Flags().StringVar(&f.checkQuery, "check-query", "", "bundle check query (default "+policy.DefaultCheckQuery+")")
	cmd.Flags().StringVar(&f.capabilities, "capabilities", "", "OPA capabilities file with the built-ins allowed beyond the pinned ones (policy.capabilities)")
}

// compile activates b on a scratch engine: it compiles, defines the
// decision and passes its check query, or the error says why.
func (f *policyCheckFlags) compile(ctx context.Context, b *bundle.Bundle) error {
	opts := policy.Options{Query: f.query, CheckQuery: f.checkQuery}
	if f.capabilities != "" {
		caps, err := policy.LoadCapabilitiesFile(f.capabilities)
		if err != nil {
			return fmt.Errorf("--capabilities: %w", err)
		}
		opts.Capabilities = caps
	}
	return policy.NewEngine(opts).Activate(ctx, b)
}

func newBundleBuildCommand() *cobra.Command {
	var fl bundleBuildFlags
	cmd := &cobra.Command{
		Use:   "build DIR --revision R [--signing-key KEY.pem] -o FILE",
		Short: "Build (and sign) a policy bundle from a directory, as 'opa build' does",
		Long: `Build the bundle directory DIR (Rego modules, data.json files placed by
directory, .manifest) into an OPA bundle tarball, leaving out *_test.rego files.
The bundle is compiled and its check query run before anything is written: a
bundle that would be refused by 'tollgate serve' is not built.

With --signing-key the bundle is signed as 'opa build --signing-key' signs it
(key id "default" and RS256 unless told otherwise), so OPA and Tollgate verify
it with the public key.`,
		Example: `  tollgate bundle build policies/ --revision 2026.12.1 -o bundle.tar.gz
  tollgate bundle build policies/ --revision 2026.12.1 --signing-key ci.pem -o bundle.tar.gz`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, b, err := bundles.Build(cmd.Context(), args[0], bundles.BuildOptions{
				Revision: fl.revision, SigningKey: fl.signingKey, SigningAlgorithm: fl.signingAlg,
				KeyID: fl.keyID, Scope: fl.scope,
			})
			if err != nil {
				return err
			}
			if err := fl.policy.compile(cmd.Context(), b); err != nil {
				return fmt.Errorf("build %s: %w", args[0], err)
			}
			if err := writeFileAtomic(fl.out, data); err != nil {
				return err
			}
			signed := "unsigned"
			if fl.signingKey != "" {
				signed = "signed"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Built %s: revision %s, %s, %s\n", fl.out, b.Manifest.Revision, bundles.Digest(data), signed)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&fl.out, "output", "o", "bundle.tar.gz", "bundle file to write")
	f.StringVar(&fl.revision, "revision", "", "revision written to the manifest (default: the directory's .manifest revision, else one computed from the content)")
	f.StringVar(&fl.signingKey, "signing-key", "", "private key (PEM file) or HMAC secret file to sign the bundle with")
	f.StringVar(&fl.signingAlg, "signing-alg", bundles.DefaultSigningAlgorithm, "signing algorithm")
	f.StringVar(&fl.keyID, "key-id", bundles.DefaultKeyID, "key id named in the signature (OPA's keyid)")
	f.StringVar(&fl.scope, "scope", "", "scope signed into the bundle (OPA's signing scope)")
	fl.policy.add(cmd)
	return cmd
}

func newBundleInspectCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect FILE",
		Short: "Show a bundle's revision, digest, roots, files and signatures (not verified)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, data, err := bundles.ReadTarballFile(args[0], bundles.ReadOptions{InsecureSkipVerification: true})
			if err != nil {
				return err
			}
			info := bundles.Inspect(b, data)
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			fmt.Fprintf(out, "revision:   %s\ndigest:     %s\nsize:       %d bytes\nroots:      %s\nmodules:    %s\ndata:       %s\n",
				info.Revision, info.Digest, info.Size, strings.Join(info.Roots, ", "),
				strings.Join(info.Modules, ", "), strings.Join(info.DataRoots, ", "))
			if len(info.Signatures) == 0 {
				fmt.Fprintln(out, "signatures: none (unsigned)")
			}
			for _, s := range info.Signatures {
				fmt.Fprintf(out, "signature:  keyid %s, %s, %d files (not verified: use 'tollgate bundle verify')\n", s.KeyID, s.Algorithm, s.Files)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newBundleVerifyCommand() *cobra.Command {
	var key, alg, keyID, scope string
	var pc policyCheckFlags
	cmd := &cobra.Command{
		Use:   "verify FILE --key PUB.pem",
		Short: "Verify a bundle's signature and that it compiles and passes its check",
		Long: `Verify that FILE is signed by the key (every file's digest matches the
signed one; no file is missing or added), then compile it and run its check
query, as 'tollgate serve' does before activating a bundle. Exit status 1
when anything fails.`,
		Example: `  tollgate bundle verify bundle.tar.gz --key ci.pub.pem`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" {
				return errors.New("--key is required")
			}
			vc, err := bundles.Verification(key, alg, keyID, scope)
			if err != nil {
				return err
			}
			b, data, err := bundles.ReadTarballFile(args[0], bundles.ReadOptions{Verification: vc})
			if err != nil {
				return err
			}
			if err := pc.compile(cmd.Context(), b); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Verified %s: revision %s, %s, signed by %s\n", args[0], b.Manifest.Revision, bundles.Digest(data), vc.KeyID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&key, "key", "", "public key (PEM file) or HMAC secret file")
	f.StringVar(&alg, "algorithm", bundles.DefaultSigningAlgorithm, "signing algorithm")
	f.StringVar(&keyID, "key-id", bundles.DefaultKeyID, "key id")
	f.StringVar(&scope, "scope", "", "required signing scope")
	pc.add(cmd)
	return cmd
}

// writeFileAtomic writes data to path through a temporary file.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".bundle-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
