package promtest

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
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds of the process life cycle.
const (
	// ReadyTimeout bounds the wait for /-/ready after the process started.
	ReadyTimeout = 30 * time.Second
	// StopTimeout bounds the wait after SIGTERM before the process is killed.
	StopTimeout = 10 * time.Second
	// FlushDeadline is passed as --storage.remote.flush-deadline. The default
	// (1m) makes a sender whose remote end is down take a minute to stop.
	FlushDeadline = time.Second
	// startAttempts is how often Start picks a new port after a port clash.
	startAttempts = 5
)

// Options describe one Prometheus process. The zero value is a plain server
// with no scrape targets and no remote write.
type Options struct {
	// Agent runs Prometheus in agent mode (--enable-feature=agent with
	// --storage.agent.path on 2.x): it scrapes and remote-writes but cannot
	// be queried.
	Agent bool
	// RemoteWriteReceiver enables /api/v1/write
	// (--web.enable-remote-write-receiver).
	RemoteWriteReceiver bool
	// Features are extra --enable-feature values, e.g. "exemplar-storage".
	Features []string
	// ScrapeTargets are host:port targets of one static job "mesh" scraped
	// at ScrapeInterval on /metrics.
	ScrapeTargets []string
	// ScrapeInterval defaults to DefaultScrapeInterval. It is also the
	// global scrape and evaluation interval.
	ScrapeInterval time.Duration
	// RemoteWriteURL, if set, adds one remote_write entry named
	// RemoteWriteName with a fast queue (see the Queue* constants).
	RemoteWriteURL string
	// SendExemplars sets send_exemplars on the remote_write entry.
	SendExemplars bool
	// ExtraConfig is raw YAML merged into the generated configuration at the
	// top level: lists such as scrape_configs or remote_write are appended to
	// the generated ones, new keys are added, and redefining another
	// generated key is an error.
	ExtraConfig string
	// Args are extra command-line flags, e.g. "--log.level=debug".
	Args []string
	// Binary, when set, is the Prometheus binary to run (see Binary3)
	// instead of the one Binary finds.
	Binary string
}

// Prometheus is a running (or stopped) Prometheus child process. Its methods
// are safe for concurrent use, except that Restart must be called from the
// test goroutine.
type Prometheus struct {
	// URL is the base URL, http://127.0.0.1:PORT, with no trailing slash.
	URL string
	// Addr is the listen address 127.0.0.1:PORT. It stays the same across
	// Restart.
	Addr string
	// Dir is the temporary directory holding ConfigFile and the data
	// directory. It survives Stop and Restart and is removed after the test.
	Dir string
	// ConfigFile is the path of the generated configuration.
	ConfigFile string

	t       testing.TB
	opts    Options
	bin     string
	version string
	log     LogBuffer
	client  *http.Client

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
	exitErr error         // set before done is closed
}

// Start writes a configuration file into t.TempDir, starts Prometheus on a
// free 127.0.0.1 port (choosing another one on a port clash) and waits up to
// ReadyTimeout for /-/ready. The process log is kept in memory and printed
// with t.Log if the test fails. t.Cleanup stops the process. Start skips or
// fails the test as Binary does when there is no binary, and fails it when
// the process cannot be started.
func Start(t testing.TB, opts Options) *Prometheus {
	t.Helper()
	p := newPrometheus(t, opts)
	for attempt := 1; ; attempt++ {
		addr, err := freeAddr()
		if err != nil {
			t.Fatalf("cannot find a free port: %v", err)
		}
		start := time.Now()
		err = p.start(addr)
		if err == nil {
			t.Logf("prometheus %s (agent=%v) ready at %s in %s", p.version, opts.Agent, p.URL, time.Since(start).Round(time.Millisecond))
			return p
		}
		if errors.Is(err, errPortInUse) && attempt < startAttempts {
			t.Logf("port %s taken, retrying: %v", addr, err)
			continue
		}
		t.Fatalf("cannot start prometheus: %v", err)
	}
}

// newPrometheus prepares the directory, config and cleanups of a process
// without starting it.
func newPrometheus(t testing.TB, opts Options) *Prometheus {
	t.Helper()
	var bin, version string
	if opts.Binary != "" {
		var err error
		bin = opts.Binary
		if version, err = binaryVersion(bin); err != nil {
			t.Fatal(err)
		}
	} else {
		bin, version = BinaryVersion(t)
	}
	dir := t.TempDir()
	cfg, err := configYAML(opts)
	if err != nil {
		t.Fatalf("cannot build prometheus config: %v", err)
	}
	p := &Prometheus{
		Dir:        dir,
		ConfigFile: filepath.Join(dir, "prometheus.yml"),
		t:          t,
		opts:       opts,
		bin:        bin,
		version:    version,
		client:     &http.Client{Timeout: 10 * time.Second},
	}
	if err := os.WriteFile(p.ConfigFile, cfg, 0o600); err != nil {
		t.Fatalf("cannot write prometheus config: %v", err)
	}
	// Cleanups run last-in first-out: stop first, then print the log, so the
	// log includes the shutdown.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("config of prometheus %s:\n%s\nlog of prometheus %s:\n%s", p.URL, cfg, p.URL, p.Log())
		}
	})
	t.Cleanup(p.Stop)
	return p
}

// Stop sends SIGTERM, waits up to StopTimeout and then kills the process.
// It is idempotent and returns once the process has exited and its port is
// free.
func (p *Prometheus) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked(syscall.SIGTERM)
}

// Kill ends the process with SIGKILL, simulating a crash: no flush, no
// clean WAL close. It is idempotent; Restart starts the process again.
func (p *Prometheus) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked(syscall.SIGKILL)
}

// Restart stops the process if it runs and starts it again on the same
// address with the same configuration and data directory, so the WAL or TSDB
// survives. It fails the test if the process does not become ready.
func (p *Prometheus) Restart() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked(syscall.SIGTERM)
	if err := p.startLocked(p.Addr); err != nil {
		p.t.Fatalf("cannot restart prometheus: %v", err)
	}
}

// Running reports whether the process has been started and not yet exited.
func (p *Prometheus) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Log returns everything the process (and its restarts) wrote to stdout and
// stderr so far.
func (p *Prometheus) Log() string { return p.log.String() }

// WriteURL returns the remote-write endpoint, URL + "/api/v1/write". Only a
// process started with RemoteWriteReceiver accepts writes there.
func (p *Prometheus) WriteURL() string { return p.URL + "/api/v1/write" }

var errPortInUse = errors.New("address already in use")

func (p *Prometheus) start(addr string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.startLocked(addr)
}

func (p *Prometheus) startLocked(addr string) error {
	if p.Addr != addr { // a Restart keeps both, and readers do not lock
		p.Addr = addr
		p.URL = "http://" + addr
	}
	cmd := exec.Command(p.bin, p.args()...)
	cmd.Stdout = &p.log
	cmd.Stderr = &p.log
	cmd.SysProcAttr = sysProcAttr()
	logStart := p.log.Len()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cannot start %s: %w", p.bin, err)
	}
	done := make(chan struct{})
	go func() {
		p.exitErr = cmd.Wait()
		close(done)
	}()
	p.cmd, p.done = cmd, done

	err := p.waitReady(done)
	if err == nil {
		return nil
	}
	select {
	case <-done: // exited by itself; waitReady's error says how
		p.cmd, p.done = nil, nil
	default:
		p.stopLocked(syscall.SIGKILL)
	}
	if strings.Contains(p.log.Since(logStart), "address already in use") {
		return fmt.Errorf("%s: %w", addr, errPortInUse)
	}
	return err
}

// args returns the command line for the current Addr.
func (p *Prometheus) args() []string {
	data := filepath.Join(p.Dir, "data")
	args := []string{
		"--config.file=" + p.ConfigFile,
		"--web.listen-address=" + p.Addr,
		"--storage.remote.flush-deadline=" + FlushDeadline.String(),
	}
	if p.opts.Agent {
		if majorVersion(p.version) >= 3 {
			args = append(args, "--agent")
		} else {
			args = append(args, "--enable-feature=agent")
		}
		args = append(args, "--storage.agent.path="+data)
	} else {
		args = append(args, "--storage.tsdb.path="+data)
	}
	if p.opts.RemoteWriteReceiver {
		args = append(args, "--web.enable-remote-write-receiver")
	}
	for _, f := range p.opts.Features {
		args = append(args, "--enable-feature="+f)
	}
	return append(args, p.opts.Args...)
}

func (p *Prometheus) waitReady(done <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		select {
		case <-done:
			return fmt.Errorf("prometheus exited before it was ready: %v", p.exitErr)
		default:
		}
		if last = p.ready(ctx); last == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("prometheus exited before it was ready: %v", p.exitErr)
		case <-ctx.Done():
			return fmt.Errorf("prometheus not ready within %s: %v", ReadyTimeout, last)
		case <-tick.C:
		}
	}
}

func (p *Prometheus) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/-/ready", nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer drainClose(resp)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /-/ready: %s", resp.Status)
	}
	return nil
}

// stopLocked signals the process and waits for it to exit, killing it after
// StopTimeout.
func (p *Prometheus) stopLocked(sig syscall.Signal) {
	if p.cmd == nil {
		return
	}
	cmd, done := p.cmd, p.done
	p.cmd, p.done = nil, nil
	defer p.client.CloseIdleConnections()
	select {
	case <-done:
		p.t.Logf("prometheus %s had already exited: %v", p.URL, p.exitErr)
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return
	case <-time.After(StopTimeout):
	}
	p.t.Logf("prometheus %s did not stop within %s after %v; killing it", p.URL, StopTimeout, sig)
	_ = cmd.Process.Kill()
	<-done
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// LogBuffer is a bytes.Buffer safe for the concurrent writes of exec.Cmd's
// copying goroutines and readers.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *LogBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// Since returns what was written after the first off bytes.
func (b *LogBuffer) Since(off int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf.Bytes()[off:])
}
