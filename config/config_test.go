package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/cardinal-gateway/cardinal/relabel"
)

// badFiles maps every testdata/*.bad.yml to a substring of the error Load
// must return for it. TestBadFilesAreListed keeps the two in step.
var badFiles = map[string]string{
	"missing_url.bad.yml":                "downstream.url is required",
	"empty.bad.yml":                      "downstream.url is required",
	"bad_scheme.bad.yml":                 `scheme must be http or https, not "ftp"`,
	"missing_host.bad.yml":               "downstream.url: host is missing",
	"unknown_top_key.bad.yml":            "relabel_config: unknown key, did you mean relabel_configs?",
	"unknown_downstream_key.bad.yml":     "downstream.max_retry: unknown key, did you mean max_retries?",
	"unknown_tls_key.bad.yml":            "downstream.tls_config.ca_fil: unknown key, did you mean ca_file?",
	"unknown_relabel_key.bad.yml":        "relabel_configs[0].regexp: unknown key, did you mean regex?",
	"unknown_receive_key.bad.yml":        "receive.max_bytes: unknown key",
	"unknown_admin_key.bad.yml":          "admin.token_file: unknown key, did you mean bearer_token_file?",
	"relabel_action_typo.bad.yml":        `unknown relabel action "labeldorp"`,
	"relabel_empty_rule.bad.yml":         "relabel_configs[0] is empty",
	"invalid_regex.bad.yml":              "error parsing regexp",
	"negative_retries.bad.yml":           "downstream.max_retries must not be negative",
	"backoff_order.bad.yml":              "need 0 < min_backoff (10s) <= max_backoff (1s)",
	"zero_min_backoff.bad.yml":           "need 0 < min_backoff (0s)",
	"zero_timeout.bad.yml":               "downstream.timeout must be positive",
	"bad_duration.bad.yml":               `"5 seconds"`,
	"zero_max_request_bytes.bad.yml":     "receive.max_request_bytes must be positive",
	"negative_max_request_bytes.bad.yml": "receive.max_request_bytes must be positive",
	"reserved_header.bad.yml":            `downstream.headers: "Content-Encoding" is set by Cardinal itself`,
	"reserved_header_lowercase.bad.yml":  `downstream.headers: "authorization" is set by Cardinal itself`,
	"two_auth_methods.bad.yml":           "at most one of basic_auth, oauth2 & authorization",
	"cert_without_key.bad.yml":           "key or key_file must be configured",
	"not_yaml.bad.yml":                   "cannot parse config",
	"wrong_type.bad.yml":                 `downstream.max_retries: got the string "three", want an integer`,
}

func TestLoadBad(t *testing.T) {
	t.Parallel()
	for name, want := range badFiles {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join("testdata", name)
			cfg, err := Load(path)
			if err == nil {
				t.Fatalf("Load(%s) = %+v, want an error containing %q", path, cfg, want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("Load(%s) error = %q, want it to contain %q", path, err, want)
			}
			// The error names the file, so that the operator knows which.
			if !strings.Contains(err.Error(), path) {
				t.Errorf("Load(%s) error = %q, want it to name the file", path, err)
			}

			// Parse rejects the same bytes for the same reason.
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Parse(data); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Parse(%s) error = %v, want it to contain %q", name, err, want)
			}
		})
	}
}

func TestBadFilesAreListed(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("testdata", "*.bad.yml"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		name := filepath.Base(f)
		seen[name] = true
		if _, ok := badFiles[name]; !ok {
			t.Errorf("%s has no expected error in badFiles", f)
		}
	}
	for name := range badFiles {
		if !seen[name] {
			t.Errorf("badFiles lists %s, which is not in testdata", name)
		}
	}
}

func TestLoadGood(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("testdata", "*.good.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("found %d good files in testdata, want at least minimal and full", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			cfg, err := Load(f)
			if err != nil {
				t.Fatalf("Load(%s): %v", f, err)
			}
			// A good file is good all the way: its rules compile too.
			if _, err := relabel.Compile(cfg.RelabelConfigs); err != nil {
				t.Fatalf("relabel.Compile(%s): %v", f, err)
			}
		})
	}
}

func TestLoadMinimalDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := Load(filepath.Join("testdata", "minimal.good.yml"))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Downstream
	if d.URL != "http://127.0.0.1:9090/api/v1/write" {
		t.Errorf("url = %q", d.URL)
	}
	f := func(name string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	f("timeout", time.Duration(d.Timeout), 30*time.Second)
	f("min_backoff", time.Duration(d.MinBackoff), 30*time.Millisecond)
	f("max_backoff", time.Duration(d.MaxBackoff), 5*time.Second)
	f("max_retries", d.MaxRetries, 3)
	f("max_request_bytes", cfg.Receive.MaxRequestBytes, 32<<20)
	f("len(headers)", len(d.Headers), 0)
	f("len(relabel_configs)", len(cfg.RelabelConfigs), 0)
	f("admin.bearer_token_file", cfg.Admin.BearerTokenFile, "")
	// Prometheus' client defaults survive the inline decoding.
	f("follow_redirects", d.HTTPClientConfig.FollowRedirects, true)
	f("enable_http2", d.HTTPClientConfig.EnableHTTP2, true)
	f("basic_auth", d.HTTPClientConfig.BasicAuth == nil, true)
}

func TestLoadFull(t *testing.T) {
	t.Parallel()
	path := filepath.Join("testdata", "full.good.yml")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Downstream
	f := func(name string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	f("url", d.URL, "https://mimir.example.com:8443/api/v1/push")
	f("timeout", time.Duration(d.Timeout), 10*time.Second)
	f("min_backoff", time.Duration(d.MinBackoff), 50*time.Millisecond)
	f("max_backoff", time.Duration(d.MaxBackoff), 10*time.Second)
	f("max_retries", d.MaxRetries, 5)
	f("len(headers)", len(d.Headers), 2)
	f("headers[X-Scope-OrgID]", d.Headers["X-Scope-OrgID"], "mesh")
	f("headers[X-Cardinal-Test]", d.Headers["X-Cardinal-Test"], "1")
	f("max_request_bytes", cfg.Receive.MaxRequestBytes, 1<<20)

	hc := d.HTTPClientConfig
	if hc.BasicAuth == nil {
		t.Fatal("basic_auth not decoded")
	}
	f("basic_auth.username", hc.BasicAuth.Username, "cardinal")
	f("basic_auth.password_file", hc.BasicAuth.PasswordFile, filepath.Join(dir, "secrets", "password"))
	f("tls_config.ca_file", hc.TLSConfig.CAFile, filepath.Join(dir, "certs", "ca.pem"))
	f("tls_config.server_name", hc.TLSConfig.ServerName, "mimir.internal")
	f("tls_config.insecure_skip_verify", hc.TLSConfig.InsecureSkipVerify, false)
	if hc.ProxyURL.URL == nil {
		t.Error("proxy_url not decoded")
	} else {
		f("proxy_url", hc.ProxyURL.String(), "http://proxy.example.com:3128")
	}
	f("follow_redirects", hc.FollowRedirects, false)
	f("enable_http2", hc.EnableHTTP2, false)

	f("admin.bearer_token_file", cfg.Admin.BearerTokenFile, filepath.Join(dir, "secrets", "admin-token"))
	f("Dir()", cfg.Dir(), dir)

	wantActions := []string{"drop", "keep", "replace", "hashmod", "labelmap", "lowercase", "labeldrop", "labelkeep"}
	if len(cfg.RelabelConfigs) != len(wantActions) {
		t.Fatalf("got %d relabel_configs, want %d", len(cfg.RelabelConfigs), len(wantActions))
	}
	for i, want := range wantActions {
		f("relabel_configs action", string(cfg.RelabelConfigs[i].Action), want)
	}
	repl := cfg.RelabelConfigs[2]
	f("replace.separator", repl.Separator, "/")
	f("replace.target_label", repl.TargetLabel, "workload")
	f("replace.replacement", repl.Replacement, "$1/$2")
	f("replace.source_labels", repl.SourceLabels.String(), model.LabelNames{"namespace", "app"}.String())
	f("hashmod.modulus", cfg.RelabelConfigs[3].Modulus, uint64(8))
	// Prometheus anchors relabel regexes: the prefix alone does not match.
	drop := cfg.RelabelConfigs[0].Regex
	f("drop regex matches envoy_server_uptime", drop.MatchString("envoy_server_uptime"), true)
	f("drop regex matches xenvoy_server_uptime", drop.MatchString("xenvoy_server_uptime"), false)
}

func TestLoadExplicitZeroRetries(t *testing.T) {
	t.Parallel()
	cfg, err := Load(filepath.Join("testdata", "zero_retries.good.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Downstream.MaxRetries != 0 {
		t.Fatalf("max_retries = %d, want the explicit 0 (not the default %d)", cfg.Downstream.MaxRetries, DefaultMaxRetries)
	}
	// The other defaults are still applied.
	if got := time.Duration(cfg.Downstream.Timeout); got != DefaultTimeout {
		t.Errorf("timeout = %s, want %s", got, DefaultTimeout)
	}
}

func TestLoadAbsolutePathsStay(t *testing.T) {
	t.Parallel()
	cfg, err := Load(filepath.Join("testdata", "absolute_paths.good.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Admin.BearerTokenFile, "/etc/cardinal/admin-token"; got != want {
		t.Errorf("admin.bearer_token_file = %q, want %q", got, want)
	}
	if got, want := cfg.Downstream.HTTPClientConfig.TLSConfig.CAFile, "/etc/cardinal/ca.pem"; got != want {
		t.Errorf("tls_config.ca_file = %q, want %q", got, want)
	}
}

// TestLoadRelativePaths loads from a directory other than the working
// directory: relative paths follow the config file, not the process.
func TestLoadRelativePaths(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sub := filepath.Join(dir, "etc", "cardinal")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(sub, "cardinal.yml")
	cfgText := `
downstream:
  url: https://127.0.0.1:9090/api/v1/write
  tls_config:
    ca_file: ca.pem
admin:
  bearer_token_file: ../tokens/admin
`
	if err := os.WriteFile(path, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Admin.BearerTokenFile, filepath.Join(dir, "etc", "tokens", "admin"); got != want {
		t.Errorf("admin.bearer_token_file = %q, want %q", got, want)
	}
	if got, want := cfg.Downstream.HTTPClientConfig.TLSConfig.CAFile, filepath.Join(sub, "ca.pem"); got != want {
		t.Errorf("tls_config.ca_file = %q, want %q", got, want)
	}
	if got := cfg.Dir(); got != sub {
		t.Errorf("Dir() = %q, want %q", got, sub)
	}

	// Parse has no file: paths stay as written and Dir is empty.
	pcfg, err := Parse([]byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	if got := pcfg.Admin.BearerTokenFile; got != "../tokens/admin" {
		t.Errorf("Parse: admin.bearer_token_file = %q, want it unchanged", got)
	}
	if got := pcfg.Downstream.HTTPClientConfig.TLSConfig.CAFile; got != "ca.pem" {
		t.Errorf("Parse: tls_config.ca_file = %q, want it unchanged", got)
	}
	if got := pcfg.Dir(); got != "" {
		t.Errorf("Parse: Dir() = %q, want empty", got)
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, err := Load(filepath.Join(t.TempDir(), "nope.yml"))
	if err == nil || !strings.Contains(err.Error(), "cannot read config") {
		t.Fatalf("Load(missing) error = %v, want %q", err, "cannot read config")
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) error %v does not wrap a not-exist error", err)
	}
}

// TestParseValidate covers Validate's checks one line each, in memory.
func TestParseValidate(t *testing.T) {
	t.Parallel()
	f := func(yml, wantErr string) {
		t.Helper()
		_, err := Parse([]byte(yml))
		switch {
		case wantErr == "" && err != nil:
			t.Errorf("Parse(%q): unexpected error %v", yml, err)
		case wantErr != "" && err == nil:
			t.Errorf("Parse(%q): no error, want %q", yml, wantErr)
		case wantErr != "" && !strings.Contains(err.Error(), wantErr):
			t.Errorf("Parse(%q) error = %q, want %q", yml, err, wantErr)
		}
	}
	const u = "downstream: {url: 'http://127.0.0.1:1/w'"
	f(u+"}", "")
	f("downstream: {url: 'https://mimir:443/api/v1/push'}", "")
	f("downstream: {url: 'localhost:9090/api/v1/write'}", `scheme must be http or https, not "localhost"`)
	f("downstream: {url: '/api/v1/write'}", `scheme must be http or https, not ""`)
	f(u+", min_backoff: 1s, max_backoff: 1s}", "")
	f(u+", min_backoff: 2s, max_backoff: 1s}", "min_backoff (2s) <= max_backoff (1s)")
	f(u+", max_retries: 0}", "")
	f(u+", max_retries: -3}", "max_retries must not be negative")
	f(u+", headers: {X-Scope-OrgID: a}}", "")
	f(u+", headers: {content-type: a}}", "is set by Cardinal itself")
	f(u+", headers: {Content-Length: '1'}}", "is set by Cardinal itself")
	f(u+", headers: {X-Prometheus-Remote-Write-Version: '2'}}", "is set by Cardinal itself")
	f(u+", headers: {user-agent: x}}", "is set by Cardinal itself")
	f(u+"}\nreceive: {max_request_bytes: 1}", "")
	f(u+"}\nreceive: {}", "")
	f(u+"}\nreceive: {max_request_bytes: 0}", "max_request_bytes must be positive")
	// hashmod without a modulus decodes; the relabel compiler rejects it.
	f(u+"}\nrelabel_configs: [{action: hashmod, source_labels: [a], target_label: b}]", "")
	f(u+"}\nrelabel_configs: [{action: Drop, regex: x}]", "")
	f(u+"}\nrelabel_configs: [{action: dropp, regex: x}]", `unknown relabel action "dropp"`)
	f(u+"}\nunknown: 1", "unknown: unknown key (known here: admin, cardinality, downstream")
}

func TestParseDefaultsPerSection(t *testing.T) {
	t.Parallel()
	// A receive section that sets nothing keeps the default size limit.
	cfg, err := Parse([]byte("downstream: {url: 'http://127.0.0.1:1/w'}\nreceive: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Receive.MaxRequestBytes != DefaultMaxRequestBytes {
		t.Errorf("max_request_bytes = %d, want %d", cfg.Receive.MaxRequestBytes, DefaultMaxRequestBytes)
	}
	// Overriding one downstream key keeps the other defaults.
	cfg, err = Parse([]byte("downstream: {url: 'http://127.0.0.1:1/w', max_backoff: 1m}\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Downstream
	if time.Duration(d.MaxBackoff) != time.Minute || time.Duration(d.MinBackoff) != DefaultMinBackoff ||
		d.MaxRetries != DefaultMaxRetries || time.Duration(d.Timeout) != DefaultTimeout {
		t.Errorf("downstream = timeout %s, min_backoff %s, max_backoff %s, max_retries %d; want defaults except max_backoff 1m",
			d.Timeout, d.MinBackoff, d.MaxBackoff, d.MaxRetries)
	}
}

func TestEmptySectionsKeepDefaults(t *testing.T) {
	cfg, err := Parse([]byte("downstream: {url: 'http://127.0.0.1:1/w'}\nreceive:\nmerge:\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Receive.MaxRequestBytes != DefaultMaxRequestBytes {
		t.Errorf("max_request_bytes = %d, want the default", cfg.Receive.MaxRequestBytes)
	}
	if cfg.Merge.Staleness != model.Duration(DefaultStaleness) || cfg.Merge.MaxInputs != DefaultMaxInputs {
		t.Errorf("merge = %+v, want the defaults", cfg.Merge)
	}
}

// Issue 12: errors name their path, suggest what was meant, and name no Go
// types; a relabel error names its rule.
func TestErrorsNamePaths(t *testing.T) {
	f := func(yml, want string) {
		t.Helper()
		_, err := Parse([]byte("downstream: {url: 'http://127.0.0.1:1/w'}\n" + yml))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to contain %q", yml, err, want)
		}
		if err != nil && (strings.Contains(err.Error(), "config.plain") || strings.Contains(err.Error(), "!!") || strings.Contains(err.Error(), "type ")) {
			t.Errorf("%q: error %q names Go or YAML internals", yml, err)
		}
	}
	f("merge:\n  flush_intervall: 5s\n", "merge.flush_intervall: unknown key, did you mean flush_interval?")
	f("limits:\n  max_series_per_workload: lots\n", `limits.max_series_per_workload: got the string "lots", want an integer`)
	f("merge:\n  staleness: soon\n", "merge.staleness")
	f("relabel_configs:\n  - {action: keep, source_labels: [a], regex: 'x'}\n  - {action: keep, source_labels: [a], regex: '('}\n", "relabel_configs[1].regex")
	f("relabel_configs:\n  - {action: replace, source_labels: [a], regex: 'x'}\n  - {action: drop, source_labels: [a], regexx: 'x'}\n", "relabel_configs[1].regexx: unknown key, did you mean regex?")
	f("downstream_:\n  url: x\n", "downstream_: unknown key, did you mean downstream?")
	f("limits:\n  overrides: {\"a/b\": many}\n", `limits.overrides["a/b"]: got the string "many", want an integer`)
	// Enums are checked when the YAML is read, with their path.
	f("limits:\n  mode: enforcing\n", `limits.mode: "enforcing" is not one of enforce, dry_run`)
	f("merge:\n  gauges: [{match: x, policy: avg}]\n", `merge.gauges[0].policy: "avg" is not one of sum, max, min, last`)
	f("merge:\n  types: [{match: x, type: histogram}]\n", `merge.types[0].type: "histogram" is not one of counter, gauge`)
}
