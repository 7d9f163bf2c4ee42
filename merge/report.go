package merge

import (
	"cmp"
	"slices"

	"github.com/cardinal-gateway/cardinal/wire"
)

// Collision describes one merged output for the collisions report.
type Collision struct {
	Series          string   `json:"series"`
	Inputs          int      `json:"inputs"`
	CollapsedLabels []string `json:"collapsed_labels"`
	Kind            string   `json:"kind"`
}

// Collisions returns the top merged outputs by number of live inputs.
func (m *Merger) Collisions(top int) []Collision {
	out := []Collision{}
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		sh.outputs.each(func(_ uint64, o *output) {
			if o.m == nil || o.m.enc == nil {
				return
			}
			active := 0
			for i := range o.m.inputs.len() {
				ip := o.m.inputs.at(i)
				if h := o.m.hist(ip); !ip.stale && (h == nil || !h.stale) {
					active++
				}
			}
			desc := "{}"
			if ls, err := wire.DecodeLabels(o.m.enc); err == nil {
				desc = labelsString(ls)
			}
			out = append(out, Collision{
				Series:          desc,
				Inputs:          active,
				CollapsedLabels: slices.Clone(o.m.collapsed),
				Kind:            o.m.kind.String(),
			})
		})
		sh.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b Collision) int {
		if c := cmp.Compare(b.Inputs, a.Inputs); c != 0 {
			return c
		}
		return cmp.Compare(a.Series, b.Series)
	})
	if top > 0 && len(out) > top {
		out = out[:top]
	}
	return out
}
