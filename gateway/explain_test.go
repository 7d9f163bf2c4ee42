package gateway

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cardinal-gateway/cardinal/config"
)

func compileYAML(t *testing.T, yml string) *Compiled {
	t.Helper()
	return compileConfig(t, []byte("downstream: {url: 'http://127.0.0.1:1/w'}\n"+yml))
}

// Issue 12: a labelkeep that drops __name__ (so every series) passed
// `check config` as OK. Each warning names the first rule responsible.
func TestWarnings(t *testing.T) {
	f := func(rules string, want ...string) {
		t.Helper()
		got := strings.Join(compileYAML(t, rules).Warnings(), "\n")
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: warnings %q, want one containing %q", rules, got, w)
			}
		}
		if len(want) == 0 && got != "" {
			t.Errorf("%s: unexpected warnings %q", rules, got)
		}
	}
	f("relabel_configs:\n  - {action: labelkeep, regex: 'app|job'}\n", "relabel_configs[0] removes __name__")
	f("relabel_configs:\n  - {action: labeldrop, regex: pod}\n  - {action: labeldrop, regex: 'le|instance'}\n", "relabel_configs[1] removes le from histogram buckets")
	f("relabel_configs:\n  - {action: keep, source_labels: [__name__], regex: nothing}\n", "drop every typical series")
	f("relabel_configs:\n  - {action: labeldrop, regex: 'pod|instance'}\n")
	// Out of scope, a rule cannot hurt the series it does not see.
	f("scope: ['{__name__=~\"istio_.*\"}']\nrelabel_configs:\n  - {action: labeldrop, regex: 'le|pod'}\n")
	for _, preset := range []string{"istio.yml", "linkerd.yml", "cardinal.yml"} {
		cfg, err := config.Load("../deploy/examples/" + preset)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Compile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if w := c.Warnings(); len(w) != 0 {
			t.Errorf("preset %s: warnings %q", preset, w)
		}
	}
}

func TestExplainSaysWhatEachSectionDoes(t *testing.T) {
	raw, err := os.ReadFile("../deploy/examples/istio.yml")
	if err != nil {
		t.Fatal(err)
	}
	c := compileConfig(t, raw)
	var b bytes.Buffer
	c.Explain(&b)
	for _, want := range []string{
		"scope: rules, trace sampling and caps apply to the series matching {__name__=~\"istio_.*|envoy_.*\"}",
		"relabel_configs[0]: drop series whose __name__ matches",
		"relabel_configs[1]: keep only the labels matching",
		"trace_sampling: the labels trace_id",
		"limits: a workload is namespace/app",
		"merge: series that collapse into one are merged",
		"summary quantiles by max",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("explanation lacks %q:\n%s", want, b.String())
		}
	}
	y, err := c.EffectiveYAML()
	if err != nil {
		t.Fatal(err)
	}
	// The effective config parses back to the same effective config.
	again, err := config.Parse(y)
	if err != nil {
		t.Fatalf("the effective config does not parse: %v\n%s", err, y)
	}
	c2, err := Compile(again)
	if err != nil {
		t.Fatal(err)
	}
	y2, _ := c2.EffectiveYAML()
	if !bytes.Equal(y, y2) {
		t.Errorf("the effective config is not a fixed point:\n%s\n---\n%s", y, y2)
	}
}

// compileConfig compiles raw as serve would.
func compileConfig(t *testing.T, raw []byte) *Compiled {
	t.Helper()
	cfg, err := config.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// explainConfig returns the explanation of raw.
func explainConfig(t *testing.T, raw []byte) string {
	t.Helper()
	var b bytes.Buffer
	compileConfig(t, raw).Explain(&b)
	return b.String()
}

// check config says how each rule's regex is matched, so that a regex that
// needs the engine on every label shows before the traffic does. The
// shipped examples must need none.
func TestExplainSaysHowRegexesMatch(t *testing.T) {
	examples, err := filepath.Glob("../deploy/examples/*.yml")
	if err != nil || len(examples) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, path := range examples {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := explainConfig(t, raw); strings.Contains(got, "regex engine runs") {
			t.Errorf("%s: a rule needs the regex engine:\n%s", path, got)
		}
	}
	got := explainConfig(t, []byte("downstream: {url: 'http://127.0.0.1:9/api/v1/write'}\nrelabel_configs:\n"+
		"  - {action: labelkeep, regex: '(__name__|(app|namespace))'}\n"+
		"  - {action: replace, source_labels: [path], regex: '/api/([a-z]+)/\\d+', target_label: route}\n"))
	for _, want := range []string{
		"relabel_configs[0]: keep only the labels matching (__name__|(app|namespace)) [regex: matched as 3 literals, without the regex engine]",
		"relabel_configs[1]: set route to \"$1\" where path matches /api/([a-z]+)/\\d+ [regex: the regex engine runs on every match]",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("explanation lacks %q:\n%s", want, got)
		}
	}
}
