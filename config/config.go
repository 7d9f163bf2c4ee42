// Package config reads and validates Cardinal's YAML configuration.
//
// Decoding is strict: an unknown key is an error, so a typo cannot silently
// disable a rule. Load applies defaults and validates; the result is
// immutable by convention and is compiled into the running pipeline by the
// gateway package.
package config

import (
	"errors"
	"fmt"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"time"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"
	"go.yaml.in/yaml/v2"
)

// Defaults, as documented in the README.
const (
	DefaultTimeout         = 30 * time.Second
	DefaultMinBackoff      = 30 * time.Millisecond
	DefaultMaxBackoff      = 5 * time.Second
	DefaultMaxRetries      = 3
	DefaultMaxRequestBytes = 32 << 20
)

// Config is the whole configuration file.
type Config struct {
	Downstream     DownstreamConfig  `yaml:"downstream"`
	Receive        ReceiveConfig     `yaml:"receive,omitempty"`
	RelabelConfigs []*relabel.Config `yaml:"relabel_configs,omitempty"`
	Admin          AdminConfig       `yaml:"admin,omitempty"`

	// dir is the directory of the file the config came from; relative paths
	// in it are resolved against it.
	dir string
}

// DownstreamConfig says where and how Cardinal forwards remote write.
type DownstreamConfig struct {
	URL        string            `yaml:"url"`
	Timeout    model.Duration    `yaml:"timeout,omitempty"`
	Headers    map[string]string `yaml:"headers,omitempty"`
	MinBackoff model.Duration    `yaml:"min_backoff,omitempty"`
	MaxBackoff model.Duration    `yaml:"max_backoff,omitempty"`
	MaxRetries int               `yaml:"max_retries,omitempty"`

	// HTTPClientConfig is Prometheus' own client config (basic_auth,
	// authorization, oauth2, tls_config, proxy_url...), so users can paste the
	// settings of their remote_write section.
	HTTPClientConfig commoncfg.HTTPClientConfig `yaml:",inline"`
}

// ReceiveConfig limits what senders may send.
type ReceiveConfig struct {
	// MaxRequestBytes caps the decompressed size of one request.
	MaxRequestBytes int `yaml:"max_request_bytes,omitempty"`
}

// AdminConfig protects the mutating admin endpoints.
type AdminConfig struct {
	// BearerTokenFile holds the token that mutating admin calls must present.
	// Without it, mutating calls are refused.
	BearerTokenFile string `yaml:"bearer_token_file,omitempty"`
}

// UnmarshalYAML applies the defaults before decoding, the way Prometheus does,
// so that an absent key keeps its default and a present one overrides it.
func (c *DownstreamConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DownstreamConfig{
		Timeout:          model.Duration(DefaultTimeout),
		MinBackoff:       model.Duration(DefaultMinBackoff),
		MaxBackoff:       model.Duration(DefaultMaxBackoff),
		MaxRetries:       DefaultMaxRetries,
		HTTPClientConfig: commoncfg.DefaultHTTPClientConfig,
	}
	type plain DownstreamConfig
	return unmarshal((*plain)(c))
}

// UnmarshalYAML applies the defaults before decoding.
func (c *ReceiveConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = ReceiveConfig{MaxRequestBytes: DefaultMaxRequestBytes}
	type plain ReceiveConfig
	return unmarshal((*plain)(c))
}

// Load reads, decodes and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("cannot resolve config directory: %w", err)
	}
	cfg.dir = dir
	cfg.Downstream.HTTPClientConfig.SetDirectory(dir)
	if cfg.Admin.BearerTokenFile != "" && !filepath.IsAbs(cfg.Admin.BearerTokenFile) {
		cfg.Admin.BearerTokenFile = filepath.Join(dir, cfg.Admin.BearerTokenFile)
	}
	return cfg, nil
}

// Parse decodes and validates a configuration held in memory. Relative paths
// stay relative to the working directory.
func Parse(data []byte) (*Config, error) {
	// Sections the file may leave out entirely keep their defaults.
	cfg := &Config{Receive: ReceiveConfig{MaxRequestBytes: DefaultMaxRequestBytes}}
	if err := yaml.UnmarshalStrict(data, cfg); err != nil {
		return nil, fmt.Errorf("cannot parse config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Validate checks the values that decoding alone cannot.
func (c *Config) Validate() error {
	d := &c.Downstream
	if d.URL == "" {
		return errors.New("downstream.url is required")
	}
	u, err := url.Parse(d.URL)
	if err != nil {
		return fmt.Errorf("downstream.url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("downstream.url: scheme must be http or https, not %q", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("downstream.url: host is missing")
	}
	if d.Timeout <= 0 {
		return errors.New("downstream.timeout must be positive")
	}
	if d.MinBackoff <= 0 || d.MaxBackoff < d.MinBackoff {
		return fmt.Errorf("downstream: need 0 < min_backoff (%s) <= max_backoff (%s)", d.MinBackoff, d.MaxBackoff)
	}
	if d.MaxRetries < 0 {
		return errors.New("downstream.max_retries must not be negative")
	}
	for name := range d.Headers {
		switch textproto.CanonicalMIMEHeaderKey(name) {
		case "Content-Encoding", "Content-Type", "Content-Length", "X-Prometheus-Remote-Write-Version", "Authorization", "User-Agent":
			return fmt.Errorf("downstream.headers: %q is set by Cardinal itself", name)
		}
	}
	if err := d.HTTPClientConfig.Validate(); err != nil {
		return fmt.Errorf("downstream: %w", err)
	}
	if c.Receive.MaxRequestBytes <= 0 {
		return errors.New("receive.max_request_bytes must be positive")
	}
	for i, rc := range c.RelabelConfigs {
		if rc == nil {
			return fmt.Errorf("relabel_configs[%d] is empty", i)
		}
	}
	return nil
}

// Dir returns the directory relative paths were resolved against, or "" for a
// config that did not come from a file.
func (c *Config) Dir() string { return c.dir }
