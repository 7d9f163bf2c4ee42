package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: no input may panic the config parser, and whatever it accepts
// holds the invariants the rest of Cardinal relies on.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yml")
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("downstream: {url: 'http://a/'}\nmerge:\nlimits:\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			return
		}
		switch {
		case cfg.Downstream.URL == "":
			t.Fatal("accepted without downstream.url")
		case cfg.Receive.MaxRequestBytes <= 0, cfg.Downstream.Timeout <= 0, cfg.Downstream.MaxRetries < 0:
			t.Fatalf("accepted non-positive limits: %+v %+v", cfg.Receive, cfg.Downstream)
		case cfg.Merge.Staleness <= 0, cfg.Merge.FlushInterval <= 0, cfg.Merge.MaxInputs <= 0:
			t.Fatalf("accepted merge settings that stop merging: %+v", cfg.Merge)
		case cfg.Limits.Window <= 0, cfg.Limits.MaxSeriesPerWorkload < 0:
			t.Fatalf("accepted limits that break the limiter: %+v", cfg.Limits)
		case cfg.TraceSampling.Ratio < 0, cfg.TraceSampling.Ratio > 1:
			t.Fatalf("accepted ratio %v", cfg.TraceSampling.Ratio)
		}
	})
}
