package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// run sets everything up, measures, reports and cleans up, interrupted or
// not.
func run(ctx context.Context, o options, stdout io.Writer) (err error) {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	opaBin, err := ensureOPA(ctx, root, o.opa)
	if err != nil {
		return err
	}
	nginxBin := ""
	if o.nginx != "off" {
		nginxBin, err = nginxBinary()
		if err != nil && o.nginx == "on" {
			return err
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "skipping the NGINX scenario:", err)
		}
	}
	tmp, err := os.MkdirTemp("", "tollgate-load-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)

	is, err := newIssuer()
	if err != nil {
		return err
	}
	defer is.close()
	fmt.Fprintf(os.Stderr, "minting %d RS256 tokens\n", o.users)
	ttl := time.Hour + time.Duration(o.rounds*len(o.concurrency)*6)*(o.duration+o.warmup)
	users, err := is.users(o.users, ttl)
	if err != nil {
		return err
	}
	prebuilt := ""
	if o.tollgate != "" {
		prebuilt = resolve(root, o.tollgate)
	}
	tg, err := buildTollgate(ctx, root, tmp, prebuilt)
	if err != nil {
		return err
	}

	var procs []*process
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop()
		}
	}()
	ceiling, err := startCeiling(ctx, tmp)
	if err != nil {
		return err
	}
	procs = append(procs, ceiling)
	adminAddr := ""
	if o.cpuProfile != "" || o.memProfile != "" {
		if adminAddr, err = freeAddr(); err != nil {
			return err
		}
		tg.adminKeysFile = filepath.Join(tmp, "admin-keys.yaml")
		if tg.adminKey, err = newAPIKey(ctx, tg.bin, "load", "tollgate:admin", tg.adminKeysFile); err != nil {
			return err
		}
	}
	tollgate, err := startTollgate(ctx, root, tmp, tg, is, o.decisionTimeout, adminAddr)
	if err != nil {
		return err
	}
	procs = append(procs, tollgate)
	opa, err := startOPA(ctx, root, tmp, opaBin, is, tg)
	if err != nil {
		return err
	}
	procs = append(procs, opa)
	targets := []*target{
		ceilingTarget(ceiling.url, ceiling.pid()),
		opaTarget(opa.url, opa.pid()),
		tollgateTarget(tollgate.url, tollgate.pid()),
	}
	var ngx *nginxSetup
	if nginxBin != "" {
		ngx, err = startNginx(ctx, nginxBin, tmp, strings.TrimPrefix(tollgate.url, "http://"), strings.TrimPrefix(ceiling.url, "http://"))
		if err != nil {
			return err
		}
		procs = append(procs, ngx.process)
		targets = append(targets,
			nginxTarget("nginx+tollgate", "NGINX `auth_request` to Tollgate's `/v1/forward-auth`, then the upstream (the ceiling handler)",
				ngx.withAuth, true, append(slices.Clone(ngx.pids), tollgate.pid(), ceiling.pid())),
			nginxTarget("nginx", "the same NGINX, proxying to the same upstream alone",
				ngx.alone, false, append(slices.Clone(ngx.pids), ceiling.pid())),
		)
	}
	if len(o.servers) > 0 {
		targets = slices.DeleteFunc(targets, func(t *target) bool { return !slices.Contains(o.servers, t.name) })
		if len(targets) == 0 {
			return errors.New("-servers: none of these servers can run here")
		}
	}
	alive := func() error {
		for _, p := range procs {
			if err := p.alive(); err != nil {
				return err
			}
		}
		return nil
	}

	m := &mixer{users: users, apiKey: tg.apiKey, keyOwner: tg.keyOwner, shares: o.shares, requestIDs: o.requestIDs, seed: o.seed}
	load0 := loadAverage()
	profiled := make(chan error, 1)
	measured := func() {
		if o.cpuProfile == "" {
			profiled <- nil
			return
		}
		d := time.Duration(o.rounds*len(o.concurrency)*len(targets)) * o.duration
		secs := max(1, int(d.Round(time.Second)/time.Second))
		go func() {
			profiled <- profile(ctx, "http://"+adminAddr, tg.adminKey, fmt.Sprintf("profile?seconds=%d", secs), d, resolve(root, o.cpuProfile))
		}()
	}
	results, err := measure(ctx, m, targets, o, alive, measured)
	if err != nil {
		return err
	}
	if err := <-profiled; err != nil {
		return err
	}
	if o.cpuProfile != "" {
		fmt.Fprintln(os.Stderr, "wrote", resolve(root, o.cpuProfile))
	}
	if o.memProfile != "" {
		if err := profile(ctx, "http://"+adminAddr, tg.adminKey, "allocs", 0, resolve(root, o.memProfile)); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "wrote", resolve(root, o.memProfile))
	}
	load1 := loadAverage()
	rss := map[string]int64{}
	for _, t := range targets {
		rss[t.name] = sumPeakRSS(t.pids())
	}
	rep := &report{
		opts: o, targets: targets, results: results, rss: rss,
		opaVersion: opaVersion(ctx, opaBin), revision: tollgateRevision(ctx, root, o.tollgate), date: time.Now().UTC(),
		load: [2]string{load0, load1},
	}
	if ngx != nil {
		rep.nginxVersion = nginxVersion(ctx, nginxBin)
	}
	rep.table(stdout)
	if o.out != "" {
		chart := ""
		if o.chart != "" {
			chart = resolve(root, o.chart)
			if err := rep.chart(chart); err != nil {
				return err
			}
		}
		if err := rep.writeMarkdown(resolve(root, o.out), chart); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "wrote", resolve(root, o.out))
	}
	if err := rep.failures(); err != nil {
		// What the servers said, to tell why (their files go with tmp).
		for _, p := range procs {
			fmt.Fprintf(os.Stderr, "--- %s log, the last lines:\n%s\n", p.name, tail(p.log, 15))
		}
		if ngx != nil {
			fmt.Fprintf(os.Stderr, "--- nginx error.log, the last lines:\n%s\n", tail(ngx.errorLog, 15))
		}
		return err
	}
	return nil
}

func resolve(root, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(root, p)
}

// repoRoot is the nearest directory, from the working directory up, whose
// go.mod is the product's module.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), "module github.com/tollgate/tollgate\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the tollgate repository: run from it (go -C test/load run .)")
		}
		dir = parent
	}
}

// tollgateRevision says which Tollgate ran: the working tree's git
// revision when the harness built it, else the binary given.
func tollgateRevision(ctx context.Context, root, prebuilt string) string {
	if prebuilt != "" {
		return "binary " + prebuilt
	}
	return "built from " + gitRevision(ctx, root)
}

func gitRevision(ctx context.Context, root string) string {
	cmd := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func nginxVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "-v").CombinedOutput()
	if err != nil {
		return "unknown"
	}
	_, v, _ := strings.Cut(strings.TrimSpace(string(out)), "nginx/")
	return v
}

// opaData is the peer's data.loadtest: the issuer, its JWKS as a string
// (what io.jwt.decode_verify's cert takes) and the API key by SHA-256.
func opaData(is *issuer, s *tollgateSetup) ([]byte, error) {
	sum := sha256.Sum256([]byte(s.apiKey))
	id := strings.TrimPrefix(s.apiKey, "tgk_")
	if i := strings.LastIndexByte(id, '_'); i >= 0 {
		id = id[:i]
	}
	return json.Marshal(map[string]any{
		"issuer":   is.url,
		"audience": audience,
		"jwks":     string(is.jwks),
		"api_keys": map[string]any{
			hex.EncodeToString(sum[:]): map[string]any{"owner": s.keyOwner, "key_id": id, "scopes": []string{"products:read"}},
		},
	})
}
