package relabel

import (
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
)

// benchSeries returns n mesh-shaped series with distinct pods and request
// ids, and the number of label bytes (names and values) they hold.
func benchSeries(n int) ([][]labels.Label, int64) {
	shapes := meshSeries()
	out := make([][]labels.Label, 0, n)
	var size int64
	for i := range n {
		ls := append([]labels.Label(nil), shapes[i%len(shapes)]...)
		for j := range ls {
			switch ls[j].Name {
			case "pod", "request_id":
				ls[j].Value += "-" + string(rune('a'+i%26)) + string(rune('a'+i/26%26))
			}
			size += int64(len(ls[j].Name) + len(ls[j].Value))
		}
		out = append(out, ls)
	}
	return out, size
}

func benchmarkApply(b *testing.B, rules string) {
	p, err := Compile(parseRules(b, rules))
	if err != nil {
		b.Fatal(err)
	}
	const n = 100
	series, size := benchSeries(n)
	run := applyRun(b, p, series)
	run() // Warm up the Scratch, so B/op shows steady state.
	b.ReportAllocs()
	b.SetBytes(size)
	for b.Loop() {
		run()
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "series/s")
}

func BenchmarkApplyLabelKeepLiteral(b *testing.B) {
	benchmarkApply(b, allowlistRule)
}

func BenchmarkApplyLabelKeepRegex(b *testing.B) {
	benchmarkApply(b, "- {regex: '"+allowlistRe+"', action: labelkeep}")
}

func BenchmarkApplyReplaceCopy(b *testing.B) {
	benchmarkApply(b, "- {source_labels: [destination_workload], target_label: workload}")
}

func BenchmarkApplyReplaceRegexGroup(b *testing.B) {
	benchmarkApply(b, "- {source_labels: [pod], regex: '(.*)-[a-z0-9]+-[a-z0-9]+(-.*)?', target_label: workload}")
}

func BenchmarkApplyMixed(b *testing.B) {
	benchmarkApply(b, zeroAllocPrograms["mixed"])
}

// BenchmarkProcessBuilderMixed is the same program through Prometheus'
// labels.Builder, for comparison.
func BenchmarkProcessBuilderMixed(b *testing.B) {
	ref, err := refConfigs(parseRules(b, zeroAllocPrograms["mixed"]))
	if err != nil {
		b.Fatal(err)
	}
	series, size := benchSeries(100)
	lsets := make([]labels.Labels, len(series))
	for i, ls := range series {
		lsets[i] = labels.New(ls...)
	}
	lb := labels.NewBuilder(labels.EmptyLabels())
	b.ReportAllocs()
	b.SetBytes(size)
	for b.Loop() {
		for _, ls := range lsets {
			lb.Reset(ls)
			if relabel.ProcessBuilder(lb, ref...) {
				_ = lb.Labels()
			}
		}
	}
}
