package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newTokenCommand() *cobra.Command {
	var (
		sub    string
		aud    []string
		ttl    time.Duration
		claims []string
		scopes []string
		roles  []string
	)
	cmd := &cobra.Command{
		Use:   "token --sub SUBJECT [flags]",
		Short: "Mint a development token that `tollgate serve --dev` accepts",
		Long: `Mint an ES256-signed OIDC access token from the development issuer.

The development issuer's key is created on first use and kept in a local file
($TOLLGATE_DEV_KEY, or tollgate/dev-issuer-key.pem in your config directory);
'tollgate serve --dev' trusts the same key. Never use it in production.

The token's issuer is ` + devIssuer + ` and its audience ` + devAudience + `
unless --aud says otherwise. The token is printed alone on stdout.`,
		Example: `  tollgate token --sub alice --claim customer_number=42 --scope customers:read
  curl -H "Authorization: Bearer $(tollgate token --sub alice --role admin)" ...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if sub == "" {
				return errors.New("--sub is required")
			}
			if ttl <= 0 || ttl > 24*time.Hour {
				return fmt.Errorf("--ttl %s: want more than 0 and at most 24h", ttl)
			}
			extra := map[string]any{}
			for _, kv := range claims {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("--claim %q: want NAME=VALUE", kv)
				}
				switch k {
				case "iss", "sub", "aud", "exp", "nbf", "iat":
					return fmt.Errorf("--claim %q: set registered claims with their own flags", kv)
				}
				extra[k] = v
			}
			if len(scopes) > 0 {
				extra["scope"] = strings.Join(scopes, " ")
			}
			if len(roles) > 0 {
				extra["roles"] = roles
			}
			key, err := loadOrCreateDevKey(devKeyPath())
			if err != nil {
				return err
			}
			tok, err := key.mint(sub, aud, ttl, extra, time.Now())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), tok)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&sub, "sub", "", "subject (the user id)")
	f.StringSliceVar(&aud, "aud", []string{devAudience}, "audiences")
	f.DurationVar(&ttl, "ttl", time.Hour, "lifetime of the token")
	f.StringArrayVar(&claims, "claim", nil, "extra claim NAME=VALUE (repeatable)")
	f.StringArrayVar(&scopes, "scope", nil, "scope to grant (repeatable; joined into the space-separated scope claim)")
	f.StringArrayVar(&roles, "role", nil, "role to grant (repeatable; the roles claim)")
	return cmd
}
