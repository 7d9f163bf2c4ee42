package promtest

import (
	"fmt"
	"time"

	yaml "go.yaml.in/yaml/v2"
)

// ScrapeJob is the job name of the scrape config generated for
// Options.ScrapeTargets; scraped series carry job="mesh".
const ScrapeJob = "mesh"

// RemoteWriteName is the name of the generated remote_write entry, so sender
// metrics carry remote_name="cardinal-e2e".
const RemoteWriteName = "cardinal-e2e"

// DefaultScrapeInterval is used when Options.ScrapeInterval is zero.
const DefaultScrapeInterval = time.Second

// Queue settings of the generated remote_write entry. They flush quickly so
// that tests do not wait for the production defaults (5s deadline, 30ms to
// 5s backoff).
const (
	QueueCapacity          = 1000
	QueueMaxSamplesPerSend = 500
	QueueBatchSendDeadline = time.Second
	QueueMinBackoff        = 10 * time.Millisecond
	QueueMaxBackoff        = 100 * time.Millisecond
	QueueMinShards         = 1
	QueueMaxShards         = 4
)

// configYAML renders the Prometheus configuration for opts. ExtraConfig is
// merged at the top level: lists (scrape_configs, remote_write, ...) are
// appended to the generated ones; any other key the generator already wrote
// is an error.
func configYAML(opts Options) ([]byte, error) {
	interval := opts.ScrapeInterval
	if interval <= 0 {
		interval = DefaultScrapeInterval
	}
	cfg := yaml.MapSlice{
		{Key: "global", Value: yaml.MapSlice{
			{Key: "scrape_interval", Value: interval.String()},
			{Key: "scrape_timeout", Value: interval.String()},
			{Key: "evaluation_interval", Value: interval.String()},
		}},
	}
	if len(opts.ScrapeTargets) > 0 {
		cfg = append(cfg, yaml.MapItem{Key: "scrape_configs", Value: []any{yaml.MapSlice{
			{Key: "job_name", Value: ScrapeJob},
			{Key: "scrape_interval", Value: interval.String()},
			{Key: "scrape_timeout", Value: interval.String()},
			{Key: "metrics_path", Value: "/metrics"},
			{Key: "static_configs", Value: []any{yaml.MapSlice{
				{Key: "targets", Value: opts.ScrapeTargets},
			}}},
		}}})
	}
	if opts.RemoteWriteURL != "" {
		cfg = append(cfg, yaml.MapItem{Key: "remote_write", Value: []any{yaml.MapSlice{
			{Key: "url", Value: opts.RemoteWriteURL},
			{Key: "name", Value: RemoteWriteName},
			{Key: "remote_timeout", Value: "5s"},
			{Key: "send_exemplars", Value: opts.SendExemplars},
			{Key: "queue_config", Value: yaml.MapSlice{
				{Key: "capacity", Value: QueueCapacity},
				{Key: "max_samples_per_send", Value: QueueMaxSamplesPerSend},
				{Key: "batch_send_deadline", Value: QueueBatchSendDeadline.String()},
				{Key: "min_backoff", Value: QueueMinBackoff.String()},
				{Key: "max_backoff", Value: QueueMaxBackoff.String()},
				{Key: "min_shards", Value: QueueMinShards},
				{Key: "max_shards", Value: QueueMaxShards},
			}},
		}}})
	}
	if opts.ExtraConfig != "" {
		var extra yaml.MapSlice
		if err := yaml.Unmarshal([]byte(opts.ExtraConfig), &extra); err != nil {
			return nil, fmt.Errorf("cannot parse ExtraConfig: %w", err)
		}
		var err error
		if cfg, err = mergeTop(cfg, extra); err != nil {
			return nil, err
		}
	}
	return yaml.Marshal(cfg)
}

func mergeTop(cfg, extra yaml.MapSlice) (yaml.MapSlice, error) {
next:
	for _, item := range extra {
		for i := range cfg {
			if cfg[i].Key != item.Key {
				continue
			}
			have, ok1 := cfg[i].Value.([]any)
			add, ok2 := item.Value.([]any)
			if !ok1 || !ok2 {
				return nil, fmt.Errorf("cannot merge ExtraConfig key %v: it is generated already and is not a list", item.Key)
			}
			cfg[i].Value = append(have, add...)
			continue next
		}
		cfg = append(cfg, item)
	}
	return cfg, nil
}
