package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate/tollgate/pdp/authn/apikey"
)

func newAPIKeyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "apikey",
		Short: "Create, revoke and list API keys",
		Long: `Manage the API key file that 'tollgate serve' verifies API keys against.

A key looks like tgk_<id>_<secret>: a public 12-character id and a 256-bit
random secret. The key file keeps only each key's id, its SHA-256 hash, owner,
scopes and dates, never the key: 'apikey new' prints the key once and it
cannot be shown again. A verified key becomes a "service" identity whose
subject is the owner and whose scopes are the key's scopes. API keys are never
accepted on sensitive routes; those need an OIDC token.

The file is YAML ending in a seal line: the number of records and a SHA-256
digest of every byte above it. 'new', 'revoke' and 'seal' rewrite it sealed and
atomically (mode 0600; comments are not kept) while holding a lock on FILE.lock,
so commands run at the same time on one file all take effect. A file that is
empty, cut short or edited by hand does not match its seal: 'serve' refuses to
start with it, keeps the keys it has when it changes to such a file, and 'new',
'revoke' and 'list' refuse it. 'seal' seals a file from an older Tollgate or a
deliberate hand edit, after you have checked it.`,
		Example: `  tollgate apikey new --file keys.yaml --owner billing-service --scopes products:read --expires 90d
  KEY=$(tollgate apikey new --file keys.yaml --owner reports --scopes products:read | tail -n1)
  tollgate apikey list --file keys.yaml
  tollgate apikey revoke --file keys.yaml 4kq7m2xv7ab3
  tollgate apikey seal --dry-run --file keys.yaml`,
	}
	cmd.AddCommand(newAPIKeyNewCommand(), newAPIKeyRevokeCommand(), newAPIKeyListCommand(), newAPIKeySealCommand())
	return cmd
}

func newAPIKeyNewCommand() *cobra.Command {
	var (
		file    string
		owner   string
		scopes  []string
		expires string
	)
	cmd := &cobra.Command{
		Use:   "new --file FILE --owner NAME [--scopes a,b] [--expires 90d|720h|RFC3339]",
		Short: "Create a key, store its hash and print the key once",
		Long: `Create a new API key, add its hash to the key file (creating the file if it
does not exist) and print a summary followed by the key itself.

The key is the last line of standard output, alone on its line, so scripts can
take it with 'tail -n1'. It is not stored anywhere: put it in a secret manager
now. Lose it and you revoke it and create another.

--expires takes a duration from now (720h, 90d) or an RFC 3339 time
(2027-11-29T23:00:00Z). Without it the key does not expire.`,
		Example: `  tollgate apikey new --file keys.yaml --owner billing-service --scopes products:read
  tollgate apikey new --file keys.yaml --owner reports --scopes products:read,orders:read --expires 720h
  KEY=$(tollgate apikey new --file keys.yaml --owner ci --expires 2027-01-31T00:00:00Z | tail -n1)`,
		Args:         cobra.NoArgs,
		SilenceUsage: true, // a usage text on stdout would hide that no key line was printed
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("--file is required")
			}
			if owner == "" {
				return errors.New("--owner is required")
			}
			now := time.Now().UTC().Truncate(time.Second)
			exp, err := parseKeyExpiry(expires, now)
			if err != nil {
				return err
			}
			g, err := apikey.Generate(nil)
			if err != nil {
				return err
			}
			rec := apikey.Record{
				ID:      g.ID,
				Hash:    g.Hash,
				Owner:   owner,
				Scopes:  cleanKeyScopes(scopes),
				Created: now,
				Expires: exp,
			}
			if err := rec.Validate(); err != nil {
				return err
			}
			if err := apikey.Add(file, rec); err != nil {
				return keyFileHint(err, file)
			}

			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Added API key %s to %s\n", rec.ID, file)
			fmt.Fprintf(out, "  owner:   %s\n", rec.Owner)
			fmt.Fprintf(out, "  scopes:  %s\n", keyFieldOrDash(strings.Join(rec.Scopes, ",")))
			fmt.Fprintf(out, "  expires: %s\n", formatKeyTime(rec.Expires, "never"))
			fmt.Fprintln(cmd.ErrOrStderr(), "The key below is shown once and is not stored: keep it in a secret manager.")
			_, err = fmt.Fprintln(out, g.Key.Reveal())
			return err
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "key file to add the key to; created if missing (required)")
	f.StringVar(&owner, "owner", "", "owner of the key, e.g. a service name; becomes the identity's subject (required)")
	f.StringSliceVar(&scopes, "scopes", nil, "comma-separated scopes the key grants, e.g. products:read,orders:read")
	f.StringVar(&expires, "expires", "", "expiry: a duration from now (720h, 90d) or an RFC 3339 time; default never")
	return cmd
}

func newAPIKeyRevokeCommand() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "revoke --file FILE ID",
		Short: "Mark a key revoked",
		Long: `Mark the key with the given id revoked in the key file. A revoked key is
rejected with reason "revoked" once the server has loaded the updated file.

The argument is the key's id (see 'tollgate apikey list'). A whole key is
accepted too, for when only the key is at hand, but prefer the id: a key on a
command line ends up in shell history. Revoking a revoked key changes nothing.`,
		Example:      `  tollgate apikey revoke --file keys.yaml 4kq7m2xv7ab3`,
		Args:         cobra.ExactArgs(1),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return errors.New("--file is required")
			}
			id, err := keyIDFromArg(args[0])
			if err != nil {
				return err
			}
			rec, err := apikey.Revoke(file, id, time.Now())
			if errors.Is(err, apikey.ErrAlreadyRevoked) {
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "API key %s (owner %s) was already revoked at %s\n",
					rec.ID, rec.Owner, formatKeyTime(rec.Revoked, "-"))
				return err
			}
			if err != nil {
				return keyFileHint(err, file)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Revoked API key %s (owner %s) at %s in %s\n",
				rec.ID, rec.Owner, formatKeyTime(rec.Revoked, "-"), file)
			return err
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "key file (required)")
	return cmd
}

func newAPIKeyListCommand() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "list --file FILE",
		Short: "List the keys in a key file (never their secrets)",
		Long: `List every key in the key file: id, owner, scopes, creation, expiry and
revocation times, and whether it is active, expired or revoked now. The file
holds no secrets, so none can be shown. Times are UTC, RFC 3339.`,
		Example:      `  tollgate apikey list --file keys.yaml`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("--file is required")
			}
			s, err := apikey.LoadFile(file)
			if err != nil {
				return keyFileHint(err, file)
			}
			return writeKeyTable(cmd.OutOrStdout(), s.Records(), time.Now())
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "key file (required)")
	return cmd
}

func newAPIKeySealCommand() *cobra.Command {
	var (
		file   string
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "seal --file FILE [--dry-run]",
		Short: "Seal a key file from an older Tollgate or edited by hand",
		Long: `Check a key file that does not match its seal, or has none, and seal it.

A key file ends in a seal line written by 'new', 'revoke' and 'seal': the
number of records and a SHA-256 digest of every byte above it. 'serve', 'new',
'revoke' and 'list' refuse a file without a valid seal, because it may have been
cut short: a file cut before a key's "revoked:" line would bring the key back.
Files written before seals existed, and files edited by hand, need sealing once.

Sealing trusts the records as they are. Run it with --dry-run first: it lists
the records the file holds and says why it does not verify, changing nothing.
If a record is missing or a revocation was lost, restore the file from a backup
or fix it, then seal. The file is validated as strictly as 'serve' validates it
and rewritten sealed, atomically and under the lock; comments are not kept.
A file that already matches its seal is left as it is.`,
		Example: `  tollgate apikey seal --dry-run --file keys.yaml
  tollgate apikey seal --file keys.yaml`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("--file is required")
			}
			res, err := apikey.Seal(file, dryRun)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch {
			case res.Problem == nil:
				fmt.Fprintf(out, "%s matches its seal (%d records); nothing to do.\n", file, res.Store.Len())
				return nil
			case dryRun:
				fmt.Fprintf(out, "%s does not verify: %v\nSealing it would keep these %d records:\n", file, res.Problem, res.Store.Len())
			default:
				fmt.Fprintf(out, "%s did not verify: %v\nSealed it with these %d records:\n", file, res.Problem, res.Store.Len())
			}
			return writeKeyTable(out, res.Store.Records(), time.Now())
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "key file (required)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show the records and the problem; change nothing")
	return cmd
}

// keyFileHint adds to err, about the key file at path, the commands that
// check and seal the file when it does not match its seal.
func keyFileHint(err error, path string) error {
	if errors.Is(err, apikey.ErrNoSeal) || errors.Is(err, apikey.ErrBadSeal) {
		return fmt.Errorf("%w (a key file that is empty, cut short, edited by hand or written by a Tollgate from before seals; "+
			"check its records with 'tollgate apikey seal --dry-run --file %s', then seal it with 'tollgate apikey seal --file %s')", err, path, path)
	}
	return err
}

func writeKeyTable(w io.Writer, recs []apikey.Record, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tOWNER\tSCOPES\tCREATED\tEXPIRES\tREVOKED\tSTATUS")
	for _, r := range recs {
		status := "active"
		switch {
		case !r.Revoked.IsZero():
			status = "revoked"
		case !r.Expires.IsZero() && now.After(r.Expires):
			status = "expired"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Owner, keyFieldOrDash(strings.Join(r.Scopes, ",")),
			formatKeyTime(r.Created, "-"), formatKeyTime(r.Expires, "-"), formatKeyTime(r.Revoked, "-"), status)
	}
	return tw.Flush()
}

// keyIDFromArg accepts a key id or a whole key. Its errors never repeat the
// argument: it may be a mistyped key.
func keyIDFromArg(arg string) (string, error) {
	if strings.HasPrefix(arg, apikey.Prefix) {
		id, err := apikey.KeyID(arg)
		if err != nil {
			return "", errors.New("the argument looks like an API key but is malformed; pass the key's id instead")
		}
		return id, nil
	}
	if !apikey.ValidID(arg) {
		return "", fmt.Errorf("the argument is not a key id (%d characters of a-z and 2-7) nor a key", apikey.IDLen)
	}
	return arg, nil
}

// parseKeyExpiry reads --expires: empty (never), a Go duration (720h), a number
// of days (90d) or an RFC 3339 time. The result must be after now.
func parseKeyExpiry(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	var t time.Time
	if d, err := time.ParseDuration(s); err == nil {
		t = now.Add(d)
	} else if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n > 100*366 {
			return time.Time{}, fmt.Errorf("--expires %q: want a whole number of days, e.g. 90d", s)
		}
		t = now.AddDate(0, 0, n)
	} else if t, err = time.Parse(time.RFC3339, s); err != nil {
		return time.Time{}, fmt.Errorf("--expires %q: want a duration (720h, 90d) or an RFC 3339 time (2027-11-29T23:00:00Z)", s)
	}
	t = t.UTC().Truncate(time.Second)
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("--expires %q: the key would already be expired", s)
	}
	return t, nil
}

// cleanKeyScopes trims the scopes given on the command line and drops empty
// and repeated ones, keeping their order.
func cleanKeyScopes(in []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range in {
		s = strings.TrimSpace(s)
		if s == "" || seen[s] {
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	return out
}

func formatKeyTime(t time.Time, zero string) string {
	if t.IsZero() {
		return zero
	}
	return t.UTC().Format(time.RFC3339)
}

func keyFieldOrDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
