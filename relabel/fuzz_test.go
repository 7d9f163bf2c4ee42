package relabel

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
)

// fuzzPrograms cover every action, literal and regex matchers, templates
// and label-set growth.
var fuzzPrograms = []string{
	`
- {regex: "__name__|job|instance|namespace|pod|app", action: labelkeep}
- {source_labels: [__name__], regex: "go_.*|up", action: drop}`,
	`
- {regex: "request_id|trace_id|(?i)USER_.*", action: labeldrop}
- {source_labels: [pod], regex: "(.*)-[a-z0-9]+-[a-z0-9]+", target_label: workload}
- {source_labels: [namespace, workload], separator: "/", regex: "(.*)/(.*)", target_label: "w_${1}", replacement: "${2}"}`,
	`
- {source_labels: [a, b], separator: "", target_label: lower, action: lowercase}
- {source_labels: [a], target_label: upper, action: uppercase}
- {source_labels: [a, b], target_label: shard, modulus: 13, action: hashmod}
- {source_labels: [lower], target_label: a, action: keepequal}`,
	`
- {target_label: b_x, replacement: "set"}
- {regex: "(a|b)_(.*)", replacement: "$2", action: labelmap}
- {regex: "(.*)", replacement: "m_$1", action: labelmap}
- {regex: "m_m_.*", action: labeldrop}
- {source_labels: [m_a, a], regex: "x.*|;.*|y", action: drop}`,
	`
- {source_labels: [a], regex: "(.+)", target_label: "${1}", replacement: "$$1"}
- {source_labels: [b], regex: "", action: drop}
- {source_labels: [a, b], target_label: c, action: dropequal}`,
	`
- {source_labels: [a], regex: "x|y|", action: keep}
- {regex: "prefix_(.+)", replacement: "$1", action: labelmap}
- {source_labels: [a], regex: "(x)?(.*)", target_label: a, replacement: "$1"}`,
}

// labelsFromBytes splits data at 0 bytes into names and values and returns
// them as Apply gets them after wire.Sanitize: sorted, unique and non-empty
// names, no empty values. (An empty name is not only refused by Sanitize:
// Prometheus' own label encoding cannot hold one, its Get stops at it, so
// the reference would be wrong. Found by FuzzApply, testdata 74c29660.)
func labelsFromBytes(data []byte) []labels.Label {
	fields := bytes.Split(data, []byte{0})
	var ls []labels.Label
	for i := 0; i+1 < len(fields); i += 2 {
		if len(fields[i]) == 0 || len(fields[i+1]) == 0 {
			continue
		}
		ls = append(ls, labels.Label{Name: string(fields[i]), Value: string(fields[i+1])})
	}
	slices.SortStableFunc(ls, func(a, b labels.Label) int { return strings.Compare(a.Name, b.Name) })
	return slices.CompactFunc(ls, func(a, b labels.Label) bool { return a.Name == b.Name })
}

func FuzzApply(f *testing.F) {
	f.Add([]byte("__name__\x00up\x00job\x00api\x00pod\x00api-7d4f9c-abcde"))
	f.Add([]byte("a\x00XyZ\x00b\x00\xff\x00a_x\x001\x00b_x\x002"))
	f.Add([]byte("a\x00x\x00b\x00\x00prefix_q\x00v\x00\x00empty-name"))
	f.Add([]byte("namespace\x00ns\x00pod\x00p-1-2\x00request_id\x00r\x00USER_agent\x00u"))
	f.Add([]byte("a\x00$1\x00b\x00\u00df\u01c6\x00m_a\x00old"))

	var progs []*Program
	var refs [][]*relabel.Config
	for _, src := range fuzzPrograms {
		cfgs := parseRules(f, src)
		p, err := Compile(cfgs)
		if err != nil {
			f.Fatal(err)
		}
		ref, err := refConfigs(cfgs)
		if err != nil {
			f.Fatal(err)
		}
		progs = append(progs, p)
		refs = append(refs, ref)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ls := labelsFromBytes(data)
		var s Scratch
		for i, p := range progs {
			if d := diff(p, &s, refs[i], ls); d != "" {
				t.Fatalf("program %d, input %s\n%s\nrules:%s", i, formatProm(ls), d, fuzzPrograms[i])
			}
		}
	})
}
