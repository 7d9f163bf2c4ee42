// Package e2e runs Cardinal's end-to-end tests: the real cardinal binary
// between real Prometheus 2.42 processes (internal/promtest), all on
// 127.0.0.1. Every wait is bounded.
package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cardinal-gateway/cardinal/internal/promtest"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// cardinalBinary builds ./cmd/cardinal once per test run.
func cardinalBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cardinal-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "cardinal")
		cmd := exec.Command("go", "build", "-o", buildPath, "github.com/cardinal-gateway/cardinal/cmd/cardinal")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// cardinal is a running cardinal serve process.
type cardinal struct {
	t      testing.TB
	URL    string
	addr   string
	config string
	// args are extra flags of cardinal serve (restartCardinal reuses them).
	args []string
	cmd  *exec.Cmd
	log  *promtest.LogBuffer
	done chan error
	exit error
}

// startCardinal writes cfg to a file and runs `cardinal serve` on a free
// loopback port until the test ends. It waits until /-/ready answers 200,
// which means the downstream has been reached.
func startCardinal(t testing.TB, cfg string) *cardinal {
	t.Helper()
	return startCardinalAt(t, cfg, "")
}

// startCardinalAt is startCardinal on addr (a free port when ""), with
// extra flags.
func startCardinalAt(t testing.TB, cfg, addr string, args ...string) *cardinal {
	t.Helper()
	bin := cardinalBinary(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "cardinal.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if addr == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		ln.Close()
	}
	c := &cardinal{t: t, URL: "http://" + addr, addr: addr, config: cfgFile, args: args, log: &promtest.LogBuffer{}, done: make(chan error, 1)}
	c.cmd = exec.Command(bin, append([]string{"serve", "--config.file=" + cfgFile, "--web.listen-address=" + addr, "--log.level=debug"}, args...)...)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() {
		c.stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("cardinal log:\n%s", c.log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := httpGet(c.URL + "/-/ready"); code == http.StatusOK {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("cardinal not ready after 30s; log:\n%s", c.log.String())
		}
		select {
		case err := <-c.done:
			t.Fatalf("cardinal exited during start: %v; log:\n%s", err, c.log.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop sends sig and waits (bounded) for the process to exit.
func (c *cardinal) stop(sig syscall.Signal) error {
	if c.cmd.ProcessState != nil || c.exit != nil {
		return c.exit
	}
	_ = c.cmd.Process.Signal(sig)
	select {
	case err := <-c.done:
		c.exit = err
		if err == nil {
			c.exit = errExitedCleanly
		}
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		c.exit = <-c.done
	}
	if c.exit == errExitedCleanly {
		return nil
	}
	return c.exit
}

var errExitedCleanly = fmt.Errorf("exited cleanly")

func httpGet(url string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}
