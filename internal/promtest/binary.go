// Package promtest starts and drives real Prometheus processes for
// end-to-end tests of Cardinal.
//
// It owns the whole life of a child process: it finds the binary, writes a
// configuration file into t.TempDir, starts Prometheus on a free 127.0.0.1
// port, waits for /-/ready, keeps its log (printed only when the test fails)
// and stops it in t.Cleanup. Small HTTP helpers read the query API and the
// process' own /metrics.
//
// The package is written against Prometheus 2.42 (the Debian package), whose
// agent mode is a feature flag (--enable-feature=agent). Every helper is
// bounded in time and talks to 127.0.0.1 only.
package promtest

import (
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Environment variables read by Binary.
const (
	// EnvBinary names the Prometheus binary to use instead of the default.
	EnvBinary = "PROMETHEUS_BINARY"
	// EnvE2E set to EnvE2ERequire turns a missing binary from a skip into a
	// test failure, so CI can never skip end-to-end tests silently.
	EnvE2E = "CARDINAL_E2E"
	// EnvE2ERequire is the value of EnvE2E that makes e2e tests mandatory.
	EnvE2ERequire = "require"
)

// DefaultBinary is where the Debian package installs Prometheus.
const DefaultBinary = "/usr/bin/prometheus"

// Binary returns the path of the prometheus binary: $PROMETHEUS_BINARY if
// set, else /usr/bin/prometheus, else "prometheus" from PATH. It logs the
// binary's version. When no usable binary is found the test is skipped,
// unless CARDINAL_E2E=require is set, in which case it fails.
func Binary(t testing.TB) string {
	t.Helper()
	path, _ := BinaryVersion(t)
	return path
}

// BinaryVersion is Binary that also returns the version reported by
// `prometheus --version`, for example "2.42.0+ds".
func BinaryVersion(t testing.TB) (path, version string) {
	t.Helper()
	path, err := lookBinary()
	if err == nil {
		version, err = binaryVersion(path)
	}
	if err != nil {
		msg := "prometheus binary not usable (" + err.Error() + "); install the prometheus package (Debian: apt-get install prometheus) or set " + EnvBinary
		if os.Getenv(EnvE2E) == EnvE2ERequire {
			t.Fatalf("%s; %s=%s forbids skipping", msg, EnvE2E, EnvE2ERequire)
		}
		t.Skip(msg)
	}
	t.Logf("using %s version %s", path, version)
	return path, version
}

func lookBinary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", err
		}
		return p, nil
	}
	if _, err := os.Stat(DefaultBinary); err == nil {
		return DefaultBinary, nil
	}
	p, err := exec.LookPath("prometheus")
	if err != nil {
		return "", errors.New("not found at " + DefaultBinary + " nor in PATH")
	}
	return p, nil
}

// binaryVersion parses the first line of `prometheus --version`:
// "prometheus, version 2.42.0+ds (branch: ..., revision: ...)".
func binaryVersion(path string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	if err != nil {
		return "", errors.New("cannot run " + path + " --version: " + err.Error())
	}
	line, _, _ := strings.Cut(string(out), "\n")
	_, rest, ok := strings.Cut(line, "version ")
	if !ok {
		return "", errors.New("cannot parse version from " + strconv.Quote(line))
	}
	v, _, _ := strings.Cut(rest, " ")
	if v == "" {
		// Built with go install: no version stamped, but the module's
		// version is recorded; v0.316.0 is Prometheus 3.16.0.
		if bi, err := buildinfo.ReadFile(path); err == nil {
			var major, minor, patch int
			if _, err := fmt.Sscanf(bi.Main.Version, "v0.%d.%d", &minor, &patch); err == nil && minor >= 300 {
				major, minor = minor/100, minor%100
				return fmt.Sprintf("%d.%d.%d", major, minor, patch), nil
			}
		}
		return "", errors.New("cannot tell the version of " + path)
	}
	return v, nil
}

// EnvBinary3 names the Prometheus 3 binary (remote write 2.0) to use
// instead of bin/prom3/prometheus in the module root, where `make test`
// installs it.
const EnvBinary3 = "PROMETHEUS3_BINARY"

// Binary3 returns the path of a Prometheus 3 binary for the remote write
// 2.0 tests, skipping or failing the test as Binary does when there is none.
func Binary3(t testing.TB) string {
	t.Helper()
	path := os.Getenv(EnvBinary3)
	if path == "" {
		if root, err := moduleRoot(); err == nil {
			path = filepath.Join(root, "bin", "prom3", "prometheus")
		}
	}
	version, err := binaryVersion(path)
	if err == nil && majorVersion(version) < 3 {
		err = errors.New("version " + version + " is not 3.x")
	}
	if err != nil {
		msg := "prometheus 3 binary not usable (" + err.Error() + "); run make test, which installs it, or set " + EnvBinary3
		if os.Getenv(EnvE2E) == EnvE2ERequire {
			t.Fatalf("%s; %s=%s forbids skipping", msg, EnvE2E, EnvE2ERequire)
		}
		t.Skip(msg)
	}
	t.Logf("using %s version %s", path, version)
	return path
}

// moduleRoot is the nearest directory above the working directory that
// holds go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// majorVersion returns the leading integer of v ("2.42.0+ds" -> 2), or 0.
func majorVersion(v string) int {
	s, _, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}
