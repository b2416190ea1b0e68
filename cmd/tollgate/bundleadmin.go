package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// adminKeyEnv holds the admin key for the bundle admin commands, when no
// --admin-key-file is given. The key is never taken as a flag: flags show
// in process listings and shell history.
const adminKeyEnv = "TOLLGATE_ADMIN_KEY"

// defaultAdminURL is the admin listener of a local `tollgate serve`.
const defaultAdminURL = "http://127.0.0.1:8282"

// maxAdminResponse bounds an admin API answer.
const maxAdminResponse = 8 << 20

type adminFlags struct {
	url, keyFile, bundle string
	asJSON               bool
}

func (f *adminFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.url, "admin", defaultAdminURL, "admin API base URL (admin.listen of tollgate serve)")
	cmd.Flags().StringVar(&f.keyFile, "admin-key-file", "", "file holding the admin key (default: $"+adminKeyEnv+")")
	cmd.Flags().StringVar(&f.bundle, "bundle", defaultBundleName, "bundle name")
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print the admin API's JSON answer")
}

func (f *adminFlags) key() (string, error) {
	if f.keyFile != "" {
		b, err := os.ReadFile(f.keyFile)
		if err != nil {
			return "", fmt.Errorf("--admin-key-file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if k := os.Getenv(adminKeyEnv); k != "" {
		return k, nil
	}
	return "", fmt.Errorf("no admin key: set --admin-key-file or $%s", adminKeyEnv)
}

// call makes one admin API request and decodes the answer into out.
func (f *adminFlags) call(ctx context.Context, method, path string, body any, out any) error {
	key, err := f.key()
	if err != nil {
		return err
	}
	base, err := url.Parse(f.url)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") {
		return fmt.Errorf("--admin %q: want an http or https URL", f.url)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(base.String(), "/")+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAdminResponse))
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(data, &e)
		return fmt.Errorf("admin API: %s %s: %s: %s", method, path, resp.Status, e.Error)
	}
	return json.Unmarshal(data, out)
}

// adminEntry and adminBundle are the admin API's answer.
type adminEntry struct {
	Revision    string    `json:"revision"`
	Digest      string    `json:"digest"`
	Source      string    `json:"source"`
	ActivatedAt time.Time `json:"activated_at"`
}

type adminBundle struct {
	Active    *adminEntry  `json:"active"`
	Pinned    bool         `json:"pinned"`
	History   []adminEntry `json:"history"`
	LastError *struct {
		Revision string    `json:"revision"`
		Error    string    `json:"error"`
		At       time.Time `json:"at"`
	} `json:"last_error"`
}

type adminAnswer struct {
	Bundles map[string]adminBundle `json:"bundles"`
}

func (f *adminFlags) print(w io.Writer, a adminAnswer) error {
	if f.asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(a)
	}
	names := make([]string, 0, len(a.Bundles))
	for n := range a.Bundles {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b := a.Bundles[n]
		active := "(none)"
		if b.Active != nil {
			active = b.Active.Revision
		}
		pinned := ""
		if b.Pinned {
			pinned = " (pinned)"
		}
		fmt.Fprintf(w, "bundle %s: active %s%s\n", n, active, pinned)
		for _, e := range b.History {
			mark := " "
			if b.Active != nil && e.Digest == b.Active.Digest {
				mark = "*"
			}
			fmt.Fprintf(w, "%s %-28s %s  %s  %s\n", mark, e.Revision, e.ActivatedAt.UTC().Format(time.RFC3339), shortDigest(e.Digest), e.Source)
		}
		if b.LastError != nil {
			fmt.Fprintf(w, "last error (%s, revision %q): %s\n", b.LastError.At.UTC().Format(time.RFC3339), b.LastError.Revision, b.LastError.Error)
		}
	}
	return nil
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func newBundleAdminCommands() []*cobra.Command {
	var hf, af, uf adminFlags
	history := &cobra.Command{
		Use:   "history",
		Short: "Show the active revision, pin and history of a running tollgate (admin API)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var a adminAnswer
			if err := hf.call(cmd.Context(), http.MethodGet, "/v1/bundles", nil, &a); err != nil {
				return err
			}
			return hf.print(cmd.OutOrStdout(), a)
		},
	}
	hf.add(history)
	activate := &cobra.Command{
		Use:   "activate REVISION",
		Short: "Activate a revision from history and pin it (rollback)",
		Long: `Activate REVISION from the bundle's history on a running tollgate and pin
it: new revisions from the source are still fetched and verified, but not
activated, until 'tollgate bundle unpin'.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var a adminAnswer
			path := "/v1/bundles/" + url.PathEscape(af.bundle) + "/activate"
			if err := af.call(cmd.Context(), http.MethodPost, path, map[string]string{"revision": args[0]}, &a); err != nil {
				return err
			}
			return af.print(cmd.OutOrStdout(), a)
		},
	}
	af.add(activate)
	unpin := &cobra.Command{
		Use:   "unpin",
		Short: "Follow the bundle's source again (the newest valid revision becomes active)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var a adminAnswer
			path := "/v1/bundles/" + url.PathEscape(uf.bundle) + "/unpin"
			if err := uf.call(cmd.Context(), http.MethodPost, path, nil, &a); err != nil {
				return err
			}
			return uf.print(cmd.OutOrStdout(), a)
		},
	}
	uf.add(unpin)
	return []*cobra.Command{history, activate, unpin}
}
