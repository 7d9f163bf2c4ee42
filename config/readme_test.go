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

// TestREADMEFilesExist: every file or directory of the repository the
// README names exists (it once pointed to a DESIGN.md that did not).
func TestREADMEFilesExist(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	ref := regexp.MustCompile("`((?:cmd|wire|ingest|relabel|gateway|merge|limiter|admin|admission|tracesample|forward|server|config|demo|bench|internal|e2e|deploy|reliability|docs|\\.ci)/[A-Za-z0-9_./-]*|[A-Z]+\\.md|Makefile|Dockerfile|LICENSE)`")
	seen := 0
	for _, m := range ref.FindAllStringSubmatch(string(raw), -1) {
		path := strings.TrimSuffix(m[1], "/")
		if strings.ContainsAny(path, "*") {
			continue
		}
		seen++
		if _, err := os.Stat("../" + path); err != nil {
			t.Errorf("the README names %s, which does not exist", path)
		}
	}
	if seen < 10 {
		t.Fatalf("only %d paths found in the README", seen)
	}
}
