package relabel

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"

	"github.com/cardinal-gateway/cardinal/wire"
)

// Label names and values shaped like Istio and Linkerd metrics, with the
// awkward cases mixed in: unicode, '$', separators inside values, invalid
// UTF-8, names that rules create or template into.
var (
	genNames = []string{
		"__name__", "namespace", "app", "pod", "response_code", "request_id",
		"trace_id", "source_workload", "destination_workload", "source_app",
		"destination_service", "reporter", "le", "job", "instance", "user_agent",
		"a_x", "b_x", "x", "tmp", "ñame", "dotted.name", "Upper",
	}
	genValues = []string{
		"istio_requests_total", "request_duration_milliseconds_bucket", "200", "503",
		"frontend-7d4f9c-abcde", "reviews-v2-5b64f47978-x9k2q", "default", "istio-system",
		"destination", "source", "0.5", "+Inf", "ÄÖÜ straße", "ǆ", "$1", "a;b", ";",
		"UPPER", "MiXeD", "x\xff", "\u00a0", "\n", "Mozilla/5.0 (X11; Linux)", "8f14e45f",
		"x", "a_x", "pod", "__name__",
	}
	// Regexes for values and for names: literal alternations (the fast
	// path) and real regexes with groups.
	genRegexes = []string{
		"__name__|job|instance|namespace", "pod", "", "a|", `foo\.bar`, "200|404|503",
		"frontend-7d4f9c-abcde", "istio_requests_total", "x|a_x|b_x",
		"(.*)", "(.+)", ".*", "(.*)-[a-z0-9]+", "([a-z]+)_(.*)",
		"(?P<first>[^;]*);(?P<second>.*)", "(?i)POD|UPPER", "destination_(.+)",
		"source_(.*)", `(\d)\d\d`, "a.b", "(.*)(x)?", "[^;]*", "__name__|jo.",
		"x*", "(ñ)(.*)", "(a|b)_(.*)", "(.)(.)(.)?", `request_.*|trace_id`,
		"(?s)(.*)\n", "(x)?(.*)", "\uFFFD", "(.*)_(workload)",
		"go_.*|process_.*|up", "a.*|", "x.*y", "d.*|pod|.*_x", "(?:x|y).*",
	}
	genReplacements = []string{
		"$1", "${1}", "$2", "${first}-${second}", "static", "", "$0", "x$1y",
		"$$1", "$1x", "${2}_${1}", "$first", "$", "${", "ñ$1", "$3", "${1}${1}",
		"p_$1", "$2", "${second}",
	}
	genTargets = []string{
		"target", "pod", "app", "namespace", "${1}", "$1", "t_${2}", "$first",
		"le", "$0", "${1}x", "x", "a_x", "__name__", "$2_$1", "ñ", "dotted.name",
	}
	genSeparators = []string{";", "", "-", "$", "_"}
	genModuli     = []uint64{1, 2, 7, 1000, 1 << 63}
	genActions    = []relabel.Action{
		relabel.Replace, relabel.Keep, relabel.Drop, relabel.KeepEqual, relabel.DropEqual,
		relabel.HashMod, relabel.LabelMap, relabel.LabelDrop, relabel.LabelKeep,
		relabel.Lowercase, relabel.Uppercase,
	}
)

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

func genLabels(r *rand.Rand) []labels.Label {
	n := r.IntN(15)
	var ls []labels.Label
	for range n {
		v := pick(r, genValues)
		if r.IntN(8) == 0 {
			v += pick(r, genValues)
		}
		ls = append(ls, labels.Label{Name: pick(r, genNames), Value: v})
	}
	// Sorted, unique names (the first wins), no empty values: what Apply
	// requires of its input.
	slices.SortStableFunc(ls, func(a, b labels.Label) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return slices.CompactFunc(ls, func(a, b labels.Label) bool { return a.Name == b.Name })
}

func genSources(r *rand.Rand) model.LabelNames {
	var out model.LabelNames
	for range r.IntN(4) {
		out = append(out, model.LabelName(pick(r, genNames)))
	}
	if len(out) == 0 && r.IntN(2) == 0 {
		return nil
	}
	return out
}

func genRegex(r *rand.Rand) relabel.Regexp {
	if r.IntN(6) == 0 {
		return relabel.DefaultRelabelConfig.Regex
	}
	return relabel.MustNewRegexp(pick(r, genRegexes))
}

// genConfig returns a config for action a that usually passes Validate.
func genConfig(r *rand.Rand, a relabel.Action) *relabel.Config {
	c := relabel.DefaultRelabelConfig
	c.Action = a
	switch r.IntN(4) {
	case 0:
		c.NameValidationScheme = model.LegacyValidation
	case 1:
		c.NameValidationScheme = model.UTF8Validation
	}
	switch a {
	case relabel.Replace:
		c.SourceLabels = genSources(r)
		c.Separator = pick(r, genSeparators)
		c.Regex = genRegex(r)
		c.TargetLabel = pick(r, genTargets)
		c.Replacement = pick(r, genReplacements)
	case relabel.Keep, relabel.Drop:
		c.SourceLabels = genSources(r)
		c.Separator = pick(r, genSeparators)
		c.Regex = genRegex(r)
	case relabel.KeepEqual, relabel.DropEqual:
		c.SourceLabels = genSources(r)
		c.TargetLabel = pick(r, genNames)
	case relabel.HashMod:
		c.SourceLabels = genSources(r)
		c.Separator = pick(r, genSeparators)
		c.TargetLabel = pick(r, genNames)
		c.Modulus = pick(r, genModuli)
	case relabel.LabelMap:
		c.Regex = genRegex(r)
		c.Replacement = pick(r, genReplacements)
	case relabel.LabelDrop, relabel.LabelKeep:
		c.Regex = genRegex(r)
	case relabel.Lowercase, relabel.Uppercase:
		c.SourceLabels = genSources(r)
		c.Separator = pick(r, genSeparators)
		c.TargetLabel = pick(r, genNames)
	}
	return &c
}

// TestDifferential runs generated programs on generated label sets through
// Apply and through relabel.ProcessBuilder and compares the results.
func TestDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	cases := 0
	var s Scratch
	for prog := 0; cases < 60000; prog++ {
		// Single-action programs first, for every action, then mixed ones.
		var cfgs []*relabel.Config
		if prog < 11*200 {
			cfgs = []*relabel.Config{genConfig(r, genActions[prog%len(genActions)])}
		} else {
			for range 1 + r.IntN(5) {
				cfgs = append(cfgs, genConfig(r, pick(r, genActions)))
			}
		}
		ref, refErr := refConfigs(cfgs)
		p, err := Compile(cfgs)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("Compile error %v, Validate error %v\n%s", err, refErr, formatRules(cfgs))
		}
		if err != nil {
			continue
		}
		for range 20 {
			ls := genLabels(r)
			if d := diff(p, &s, ref, ls); d != "" {
				t.Fatalf("input %s\n%s\nrules:\n%s", formatProm(ls), d, formatRules(cfgs))
			}
			cases++
		}
		if prog%7 == 0 {
			s.Reset()
		}
	}
}

// TestResultsSurviveUntilReset checks that the results of many Apply calls
// on one Scratch stay intact until Reset, although the arena and label pool
// grow and move meanwhile.
func TestResultsSurviveUntilReset(t *testing.T) {
	cfgs := parseRules(t, `
- {source_labels: [pod], regex: "(.*)-[a-z0-9]+", target_label: workload}
- {source_labels: [namespace, workload], separator: "/", target_label: id}
- {source_labels: [__name__], target_label: name_upper, action: uppercase}
- {source_labels: [id], target_label: shard, modulus: 16, action: hashmod}
- {regex: "(.*)_workload", replacement: "${1}_wl", action: labelmap}
- {target_label: extra1, replacement: "e1"}
- {target_label: extra2, replacement: "e2"}
`)
	p, err := Compile(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := refConfigs(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	var s Scratch
	for round := range 3 {
		type result struct {
			out  []wire.Label
			want []labels.Label
		}
		var results []result
		for range 500 {
			in := genLabels(r)
			want, keep := refApply(ref, in)
			out, gotKeep := p.Apply(&s, toWire(in))
			if keep != gotKeep {
				t.Fatalf("round %d: keep = %v, want %v", round, gotKeep, keep)
			}
			results = append(results, result{out: out, want: want})
		}
		for i, res := range results {
			if len(res.out) != len(res.want) {
				t.Fatalf("round %d result %d: %d labels, want %d", round, i, len(res.out), len(res.want))
			}
			if !sameLabels(res.out, res.want) {
				t.Fatalf("round %d result %d: %s, want %s (overwritten?)",
					round, i, formatWire(res.out), formatProm(res.want))
			}
		}
		s.Reset()
	}
}
