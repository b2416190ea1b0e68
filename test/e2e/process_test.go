package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tollgate/tollgate/pdp/telemetry/telemetrytest"
)

// How long to wait for a process to come up or go down. Generous: the race
// detector and a busy CI machine slow everything; these bound hangs, they
// do not measure speed.
const (
	startTimeout = 60 * time.Second
	stopTimeout  = 15 * time.Second
)

// tailLines is how much of a process's output a failed test shows.
const tailLines = 40

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// process is a subprocess the test started; Cleanup ends it.
type process struct {
	name    string
	cmd     *exec.Cmd
	output  *telemetrytest.LogBuffer // stdout and stderr
	done    chan struct{}
	waitErr error // set before done closes
}

func startProcess(t *testing.T, name string, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{name: name, cmd: cmd, output: &telemetrytest.LogBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.output, p.output
	// Own process group, so that a kill reaches nginx's workers too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s output (last %d lines):\n%s", name, tailLines, tail(p.output.String(), tailLines))
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and waits for the process to exit; it reports the exit
// error (nil for status 0) or a timeout.
func (p *process) stop(sig syscall.Signal) error {
	if p.exited() {
		return fmt.Errorf("%s had already exited: %v", p.name, p.waitErr)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return err
	}
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(stopTimeout):
		return fmt.Errorf("%s did not exit within %s of %s", p.name, stopTimeout, sig)
	}
}

// kill ends the process and its group if it still runs.
func (p *process) kill() {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(stopTimeout):
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// errAddrInUse: the process could not listen on the port freeAddr picked
// (something took it in between); the caller tries another.
var errAddrInUse = errors.New("address already in use")

// startAttempts bounds the retries after errAddrInUse.
const startAttempts = 3

// waitHTTP polls url until it answers 200, the process exits or the start
// timeout passes.
func waitHTTP(p *process, url string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.exited() {
			out := p.output.String()
			if strings.Contains(strings.ToLower(out), "address already in use") {
				return errAddrInUse
			}
			return fmt.Errorf("%s exited before %s answered 200: %v\n%s", p.name, url, p.waitErr, tail(out, tailLines))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s did not answer 200 within %s (last error %v)\n%s", p.name, url, startTimeout, err, tail(p.output.String(), tailLines))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// tollgate

// tollgateConfig is the YAML configuration file of `tollgate serve`
// (see cmd/tollgate/config.go and the design's configuration section).
type tollgateConfig struct {
	Listen         string         `yaml:"listen"`
	TrustedProxies []string       `yaml:"trusted_proxies"`
	Issuers        []issuerConfig `yaml:"issuers"`
	APIKeys        struct {
		File string `yaml:"file,omitempty"`
	} `yaml:"api_keys"`
	DecisionLog struct {
		Enabled bool `yaml:"enabled"`
	} `yaml:"decision_log"`
	Log struct {
		Level string `yaml:"level,omitempty"`
	} `yaml:"log"`
}

type issuerConfig struct {
	Issuer     string   `yaml:"issuer"`
	Audiences  []string `yaml:"audiences"`
	Algorithms []string `yaml:"algorithms"`
}

// tollgate is one running `tollgate serve`.
type tollgate struct {
	*process
	addr string // host:port
	url  string // http://host:port
}

// startTollgate writes cfg (its Listen set to a free port) and runs
// `tollgate serve --config` until the test ends; it returns once
// /health/ready answers 200.
func startTollgate(t *testing.T, name string, cfg tollgateConfig) *tollgate {
	t.Helper()
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		cfg.Listen = freeAddr(t)
		b, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		tg := &tollgate{
			process: startProcess(t, name, exec.Command(tollgateBin, "serve", "--config", file)),
			addr:    cfg.Listen,
			url:     "http://" + cfg.Listen,
		}
		err = waitHTTP(tg.process, tg.url+"/health/ready")
		if err == nil {
			return tg
		}
		if !errors.Is(err, errAddrInUse) || attempt == startAttempts {
			t.Fatal(err)
		}
	}
}

// runTollgate runs a tollgate subcommand to completion and returns its
// standard output; a failure is fatal.
func runTollgate(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tollgateBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) || ctx.Err() != nil {
			t.Fatalf("tollgate %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
		}
		t.Fatalf("tollgate %v: %v", args, err)
	}
	return stdout.String()
}
