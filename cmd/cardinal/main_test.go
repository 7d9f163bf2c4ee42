package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs the command line in-process and returns its exit code and
// outputs.
func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// writeFile writes content to name in a fresh temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRunUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "no args", args: nil, wantCode: 2, wantStderr: "usage:"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantStderr: `unknown command "frobnicate"`},
		{name: "help", args: []string{"help"}, wantCode: 0, wantStdout: "usage:"},
		{name: "--help", args: []string{"--help"}, wantCode: 0, wantStdout: "check    config FILE"},
		{name: "-h", args: []string{"-h"}, wantCode: 0, wantStdout: "commands:"},
		{name: "--version", args: []string{"--version"}, wantCode: 0, wantStdout: "cardinal "},
		{name: "help serve", args: []string{"help", "serve"}, wantCode: 0, wantStdout: "--config.file"},
		{name: "help unknown", args: []string{"help", "nope"}, wantCode: 2, wantStderr: `unknown command "nope"`},
		{name: "serve --help", args: []string{"serve", "--help"}, wantCode: 0, wantStdout: "Runs the remote-write gateway"},
		{name: "check --help", args: []string{"check", "--help"}, wantCode: 0, wantStdout: "Loads and compiles FILE"},
		{name: "check config --help", args: []string{"check", "config", "--help"}, wantCode: 0, wantStdout: "Loads and compiles FILE"},
		{name: "demo --help", args: []string{"demo", "--help"}, wantCode: 0, wantStdout: "--workloads"},
		{name: "check without file", args: []string{"check", "config"}, wantCode: 2, wantStderr: "usage: cardinal check config FILE"},
		{name: "check without config", args: []string{"check"}, wantCode: 2, wantStderr: "usage:"},
		{name: "check something else", args: []string{"check", "rules", "x.yml"}, wantCode: 2, wantStderr: "usage:"},
		{name: "check two files", args: []string{"check", "config", "a.yml", "b.yml"}, wantCode: 2, wantStderr: "usage:"},
		{name: "serve unknown flag", args: []string{"serve", "--no-such-flag"}, wantCode: 2, wantStderr: "run 'cardinal serve --help'"},
		{name: "serve stray argument", args: []string{"serve", "cardinal.yml"}, wantCode: 2, wantStderr: "unexpected argument"},
		{name: "serve bad log level", args: []string{"serve", "--log.level=loud"}, wantCode: 2, wantStderr: "--log.level"},
		{name: "serve missing config", args: []string{"serve", "--config.file=/nonexistent/cardinal.yml"}, wantCode: 1, wantStderr: "cannot start"},
		{name: "demo unknown flag", args: []string{"demo", "--nope"}, wantCode: 2, wantStderr: "nope"},
		{name: "demo negative workloads", args: []string{"demo", "--workloads=-3"}, wantCode: 2, wantStderr: "--workloads=-3: want 1 to"},
		{name: "demo zero scrapes", args: []string{"demo", "--scrapes=0"}, wantCode: 2, wantStderr: "--scrapes=0: want 1 to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCLI(tc.args...)
			if code != tc.wantCode {
				t.Errorf("exit code = %d, want %d\nstdout: %s\nstderr: %s", code, tc.wantCode, stdout, stderr)
			}
			if tc.wantStdout != "" && !strings.Contains(stdout, tc.wantStdout) {
				t.Errorf("stdout = %q, want it to contain %q", stdout, tc.wantStdout)
			}
			if tc.wantStderr != "" && !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tc.wantStderr)
			}
			if tc.wantStdout == "" && stdout != "" {
				t.Errorf("unexpected stdout %q", stdout)
			}
		})
	}
}

func TestRunVersion(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCLI("version")
	if code != 0 {
		t.Fatalf("exit code = %d, stderr %q", code, stderr)
	}
	v, ok := strings.CutPrefix(stdout, "cardinal ")
	if !ok {
		t.Fatalf("stdout = %q, want the prefix %q", stdout, "cardinal ")
	}
	v, ok = strings.CutSuffix(v, "\n")
	if !ok || v == "" || strings.ContainsAny(v, " \n") {
		t.Errorf("stdout = %q, want one line %q", stdout, "cardinal <version>")
	}
	if stderr != "" {
		t.Errorf("stderr = %q, want nothing", stderr)
	}
}

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	good := writeFile(t, "good.yml", `
downstream:
  url: http://127.0.0.1:9090/api/v1/write
  timeout: 7s
  max_retries: 2
receive:
  max_request_bytes: 4096
relabel_configs:
  - {action: labeldrop, regex: pod}
  - {action: drop, source_labels: [__name__], regex: junk_.*}
admin:
  bearer_token_file: admin-token
`)
	// serve refuses a missing token file; keep this config servable.
	if err := os.WriteFile(filepath.Join(filepath.Dir(good), "admin-token"), []byte("t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI("check", "config", good)
	if code != 0 {
		t.Fatalf("check config good = %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, want := range []string{
		good + ": OK",
		"# The effective configuration, every default filled in:",
		"  timeout: 7s",
		"  body_stall_timeout: 15s", // a default filled in
		"downstream: forward to http://127.0.0.1:9090/api/v1/write; a forward may take 7s with up to 2 retries",
		"requests up to 4096 bytes decompressed",
		"relabel_configs[0]: remove the labels matching pod",
		"relabel_configs[1]: drop series whose __name__ matches junk_.*",
		// The token file is shown resolved against the config's directory.
		"mutating calls need the token in " + filepath.Join(filepath.Dir(good), "admin-token"),
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout does not contain %q:\n%s", want, stdout)
		}
	}
	if stderr != "" {
		t.Errorf("stderr = %q, want nothing", stderr)
	}

	minimal := writeFile(t, "minimal.yml", "downstream: {url: 'https://mimir:443/api/v1/push'}\n")
	code, stdout, _ = runCLI("check", "config", minimal)
	if code != 0 || !strings.Contains(stdout, "OK") || !strings.Contains(stdout, "mutating calls disabled") || !strings.Contains(stdout, "33554432") || strings.Contains(stdout, "WARNING") {
		t.Errorf("check config minimal = %d, stdout:\n%s", code, stdout)
	}
}

// A rule that drops __name__ passes the check, with a warning naming it.
func TestCheckConfigWarns(t *testing.T) {
	t.Parallel()
	path := writeFile(t, "warn.yml", "downstream: {url: 'http://127.0.0.1:1/w'}\nrelabel_configs:\n  - {action: labelkeep, regex: 'app|job'}\n")
	code, stdout, _ := runCLI("check", "config", path)
	if code != 0 || !strings.Contains(stdout, "WARNING: relabel_configs[0] removes __name__") {
		t.Errorf("check config = %d, stdout:\n%s", code, stdout)
	}
}

func TestCheckConfigFails(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, content, want string
	}{
		{"missing url", "downstream: {timeout: 5s}\n", "downstream.url is required"},
		{"unknown key", "downstream: {url: 'http://127.0.0.1:1/w'}\nrelabel_config: []\n", "relabel_config: unknown key, did you mean relabel_configs?"},
		{"negative retries", "downstream: {url: 'http://127.0.0.1:1/w', max_retries: -1}\n", "max_retries must not be negative"},
		// Valid YAML that only the relabel compiler rejects.
		{"hashmod modulus 0", "downstream: {url: 'http://127.0.0.1:1/w'}\nrelabel_configs:\n  - {action: hashmod, source_labels: [pod], target_label: shard, modulus: 0}\n", "relabel_configs"},
		{"replace without target_label", "downstream: {url: 'http://127.0.0.1:1/w'}\nrelabel_configs:\n  - {action: replace, source_labels: [a]}\n", "target_label"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, "cardinal.yml", tc.content)
			code, stdout, stderr := runCLI("check", "config", path)
			if code != 1 {
				t.Errorf("exit code = %d, want 1\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			if !strings.HasPrefix(stderr, "FAILED: ") || !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr = %q, want FAILED: ...%s", stderr, tc.want)
			}
			if strings.Contains(stdout, "OK") {
				t.Errorf("stdout = %q claims OK", stdout)
			}
		})
	}

	code, _, stderr := runCLI("check", "config", filepath.Join(t.TempDir(), "missing.yml"))
	if code != 1 || !strings.Contains(stderr, "FAILED: cannot read config") {
		t.Errorf("check config on a missing file = %d %q, want 1 FAILED: cannot read config", code, stderr)
	}
}

func TestDemo(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCLI("demo", "--workloads=3", "--scrapes=2")
	if code != 0 {
		t.Fatalf("demo = %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, want := range []string{"3 workloads", "2 scrapes", "injected labels:       none", "samples dropped:", "relabel="} {
		if !strings.Contains(stdout, want) {
			t.Errorf("demo output does not contain %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "DELIVERED") {
		t.Errorf("demo delivered injected labels:\n%s", stdout)
	}
}
