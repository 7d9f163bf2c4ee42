package relabel

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"go.yaml.in/yaml/v2"

	"github.com/cardinal-gateway/cardinal/wire"
)

// parseRules reads relabel_configs the way Prometheus does.
func parseRules(tb testing.TB, s string) []*relabel.Config {
	tb.Helper()
	var cfgs []*relabel.Config
	if err := yaml.UnmarshalStrict([]byte(s), &cfgs); err != nil {
		tb.Fatalf("cannot parse rules: %v\n%s", err, s)
	}
	return cfgs
}

// refConfigs returns validated copies of cfgs for relabel.ProcessBuilder,
// which needs NameValidationScheme set, or the first validation error.
func refConfigs(cfgs []*relabel.Config) ([]*relabel.Config, error) {
	out := make([]*relabel.Config, len(cfgs))
	for i, c := range cfgs {
		cp := *c
		if err := cp.Validate(model.UTF8Validation); err != nil {
			return nil, err
		}
		out[i] = &cp
	}
	return out, nil
}

// refApply runs Prometheus' relabelling on ls.
func refApply(cfgs []*relabel.Config, ls []labels.Label) ([]labels.Label, bool) {
	lb := labels.NewBuilder(labels.New(ls...))
	if !relabel.ProcessBuilder(lb, cfgs...) {
		return nil, false
	}
	var out []labels.Label
	lb.Labels().Range(func(l labels.Label) { out = append(out, l) })
	return out, true
}

// toWire copies ls into fresh memory, as a decoded request would hold it.
func toWire(ls []labels.Label) []wire.Label {
	out := make([]wire.Label, len(ls))
	for i, l := range ls {
		out[i] = wire.Label{Name: []byte(l.Name), Value: []byte(l.Value)}
	}
	return out
}

// checkWellFormed reports whether out is strictly sorted by name and has no
// empty values, as Apply promises.
func checkWellFormed(out []wire.Label) error {
	for i, l := range out {
		if len(l.Value) == 0 {
			return fmt.Errorf("label %q has an empty value", l.Name)
		}
		if i > 0 && bytes.Compare(out[i-1].Name, l.Name) >= 0 {
			return fmt.Errorf("labels %q and %q are out of order or duplicated", out[i-1].Name, l.Name)
		}
	}
	return nil
}

// sameLabels reports whether got equals want element by element.
func sameLabels(got []wire.Label, want []labels.Label) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if string(got[i].Name) != want[i].Name || string(got[i].Value) != want[i].Value {
			return false
		}
	}
	return true
}

func formatWire(ls []wire.Label) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, l := range ls {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q=%q", l.Name, l.Value)
	}
	b.WriteByte('}')
	return b.String()
}

func formatProm(ls []labels.Label) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, l := range ls {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q=%q", l.Name, l.Value)
	}
	b.WriteByte('}')
	return b.String()
}

// diff runs both implementations on ls and returns a description of any
// difference. The input is copied, so ls is left alone.
func diff(p *Program, s *Scratch, ref []*relabel.Config, ls []labels.Label) string {
	want, wantKeep := refApply(ref, ls)
	got, gotKeep := p.Apply(s, toWire(ls))
	if gotKeep != wantKeep {
		return fmt.Sprintf("keep = %v, want %v (want labels %s)", gotKeep, wantKeep, formatProm(want))
	}
	if !gotKeep {
		if got != nil {
			return "dropped series returned labels"
		}
		return ""
	}
	if err := checkWellFormed(got); err != nil {
		return fmt.Sprintf("malformed output %s: %v", formatWire(got), err)
	}
	if !sameLabels(got, want) {
		return fmt.Sprintf("got  %s\nwant %s", formatWire(got), formatProm(want))
	}
	return ""
}

func formatRules(cfgs []*relabel.Config) string {
	b, err := yaml.Marshal(cfgs)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
