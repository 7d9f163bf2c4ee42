// Package reliability tests what Cardinal promises when things go wrong: a
// downstream that fails in the ways real ones do (5xx bursts, 429 with and
// without Retry-After, connection resets before and after storing, hangs,
// slow answers, refusals), senders that overload it, clients that send
// slowly or not at all, and a kill -9 in the middle of a run between two
// real Prometheus 2.42 processes. Each test runs the real cardinal binary
// as a child process; everything listens on 127.0.0.1 only, and every loop
// is bounded in count and time.
//
// By default only the quick part runs (a few faults with short phases, well
// under a minute): `go test ./reliability/`. CARDINAL_RELIABILITY=full runs
// everything, including the overload, slow-client and kill -9 tests
// (`make reliability`). Tests that need Prometheus skip without it, unless
// CARDINAL_E2E=require.
//
// The figures each test prints are collected in README.md.
package reliability

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cardinal-gateway/cardinal/internal/promtest"
)

// EnvMode selects the part of the suite: "full" runs everything, anything
// else only the quick part.
const EnvMode = "CARDINAL_RELIABILITY"

// fullMode reports whether CARDINAL_RELIABILITY=full.
func fullMode() bool { return os.Getenv(EnvMode) == "full" }

// requireFull skips t unless the full suite was asked for.
func requireFull(t testing.TB) {
	t.Helper()
	if !fullMode() {
		t.Skipf("part of the full reliability suite: set %s=full (make reliability)", EnvMode)
	}
}

var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

// TestMain removes the binary built for the run.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// cardinalBinary builds ./cmd/cardinal once per test run (without the race
// detector: it runs as a separate process, as in production).
func cardinalBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cardinal-reliability-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildDir, buildPath = dir, filepath.Join(dir, "cardinal")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", buildPath, "github.com/cardinal-gateway/cardinal/cmd/cardinal")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// cardinalProc is a running (or ended) `cardinal serve` child process.
type cardinalProc struct {
	t      testing.TB
	URL    string // http://127.0.0.1:PORT
	addr   string
	config string
	env    []string
	cmd    *exec.Cmd
	log    *promtest.LogBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // its exit status, set before done is closed
}

// startCardinal writes cfg into a temporary directory and runs `cardinal
// serve` on a free loopback port with the extra environment env; it returns
// once /-/ready answers 200 (the downstream accepted an empty write). The
// process is killed when the test ends, and its log printed if it failed.
func startCardinal(t testing.TB, cfg string, env ...string) *cardinalProc {
	t.Helper()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "cardinal.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := &cardinalProc{t: t, URL: "http://" + addr, addr: addr, config: cfgFile, env: env}
	c.run(t)
	return c
}

// restart starts the same binary again on the same address with the same
// config file (and so the same state files) after c has exited.
func (c *cardinalProc) restart(t testing.TB) *cardinalProc {
	t.Helper()
	n := &cardinalProc{t: t, URL: c.URL, addr: c.addr, config: c.config, env: c.env}
	n.run(t)
	return n
}

func (c *cardinalProc) run(t testing.TB) {
	t.Helper()
	c.log, c.done = &promtest.LogBuffer{}, make(chan struct{})
	c.cmd = exec.Command(cardinalBinary(t), "serve", "--config.file="+c.config, "--web.listen-address="+c.addr, "--log.level=info")
	c.cmd.Env = append(os.Environ(), c.env...)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("cardinal (pid %d) log:\n%s", c.pid(), tail(c.log.String(), 60))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := httpGet(c.URL + "/-/ready"); code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cardinal not ready after 30s; log:\n%s", c.log.String())
		}
		select {
		case <-c.done:
			t.Fatalf("cardinal exited during start: %v; log:\n%s", c.err, c.log.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *cardinalProc) pid() int { return c.cmd.Process.Pid }

// stop sends sig and waits up to 30s for the process to exit (then kills
// it). It returns the exit status: nil for exit code 0. It is idempotent.
func (c *cardinalProc) stop(sig syscall.Signal) error {
	select {
	case <-c.done:
		return c.err
	default:
	}
	_ = c.cmd.Process.Signal(sig)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("did not exit within 30s of %v; killed", sig)
	}
	return c.err
}

// metrics reads the process' /metrics.
func (c *cardinalProc) metrics() (promMetrics, error) {
	return scrape(c.URL + "/metrics")
}

// promMetrics is one scrape of a /metrics endpoint.
type promMetrics map[string]*dto.MetricFamily

func scrape(url string) (promMetrics, error) {
	code, body := httpGet(url)
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d %s", url, code, tail(body, 3))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("cannot parse %s: %w", url, err)
	}
	return fams, nil
}

// value sums the series of a counter, gauge or untyped family whose label
// name has the value (all series when name is "").
func (m promMetrics) value(family, name, value string) float64 {
	sum := 0.0
	for _, s := range m[family].GetMetric() {
		if name != "" && !slices.ContainsFunc(s.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == name && l.GetValue() == value }) {
			continue
		}
		sum += s.GetCounter().GetValue() + s.GetGauge().GetValue() + s.GetUntyped().GetValue()
	}
	return sum
}

// by sums a family by the values of one label.
func (m promMetrics) by(family, label string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range m[family].GetMetric() {
		for _, l := range s.GetLabel() {
			if l.GetName() == label {
				out[l.GetValue()] += s.GetCounter().GetValue() + s.GetGauge().GetValue() + s.GetUntyped().GetValue()
			}
		}
	}
	return out
}

// httpGet fetches url with a 5s bound.
func httpGet(url string) (int, string) { return httpGetWithin(url, 5*time.Second) }

// httpGetWithin fetches url within d.
func httpGetWithin(url string, d time.Duration) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
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
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, string(b)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// sigterm asks for a graceful stop.
const sigterm = syscall.SIGTERM
