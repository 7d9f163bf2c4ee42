package config

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v2"
)

// TestREADMEDefaults checks the README's defaults table against the
// defaults Parse fills in, so that neither can drift from the other.
func TestREADMEDefaults(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	start, end := strings.Index(text, "<!-- defaults -->"), strings.Index(text, "<!-- /defaults -->")
	if start < 0 || end < start {
		t.Fatal("no defaults table in the README")
	}
	cfg, err := Parse([]byte("downstream: {url: 'http://127.0.0.1:1/w'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var effective map[any]any
	if err := yaml.Unmarshal(b, &effective); err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `([a-z_.]+)` \\| `([^`]*)` \\|$")
	rows := 0
	for _, line := range strings.Split(text[start:end], "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		rows++
		var v any = effective
		for _, k := range strings.Split(m[1], ".") {
			mm, ok := v.(map[any]any)
			if !ok {
				v = nil
				break
			}
			v = mm[k]
		}
		if got := fmt.Sprint(v); got != m[2] {
			t.Errorf("README says %s defaults to %s; the code says %q", m[1], m[2], got)
		}
	}
	if rows < 15 {
		t.Fatalf("only %d rows read from the defaults table", rows)
	}
}
