package server

import (
	"net/http"
	"time"

	"github.com/cardinal-gateway/cardinal/cardinality"
	"github.com/cardinal-gateway/cardinal/server/explorer"
)

// explorer returns the handler of the explorer page, which reads its data
// from the server's gateway and metrics registry (explorerSource). It is
// cheap to build: the templates are parsed once.
func (s *Server) explorer() http.Handler { return explorer.New(explorerSource{s}) }

// wantsJSON reports whether a request for / asks for the JSON index of the
// endpoints rather than the explorer page.
func wantsJSON(r *http.Request) bool { return explorer.WantsJSON(r) }

// explorerSource gives the explorer page the data the JSON APIs return:
// the limiter's report and caps (/api/v1/cardinality, /api/v1/limits), the
// merger's collisions (/api/v1/collisions), the estimates
// (/api/v1/cardinality/workloads, /api/v1/cardinality/labels), the guard's
// status (/api/v1/guard) and the sample counters of /metrics.
type explorerSource struct{ s *Server }

// Snapshot implements explorer.Source.
func (src explorerSource) Snapshot(top int) *explorer.Data {
	s := src.s
	now := time.Now()
	l := s.gw.Limiter()
	settings := l.Settings()
	d := &explorer.Data{
		Now: now,
		// Every workload: the page sums them in its header, then shows top.
		Workloads:  l.Cardinality(0),
		Collisions: s.gw.Collisions(top),
		Limits: explorer.Limits{
			Default: settings.Default,
			Window:  settings.Window,
			Config:  settings.Overrides,
			API:     l.APIOverrides(),
		},
		AdminToken: s.adminToken.Load() != nil,
	}
	// The counters as /metrics serves them: the same registry, gathered
	// (what could be, on an error).
	fams, err := s.opts.Registry.Gather()
	if err != nil {
		s.logger.Warn("explorer: cannot gather every metric", "err", err)
	}
	d.Received, d.Forwarded, d.Dropped = explorer.Counters(fams)
	if est := s.gw.Estimator(); est != nil {
		// Every label of every group: the page ranks them all, and a
		// label the rules remove (no values after them) would not be in
		// the top by values after the rules.
		d.Estimates = &explorer.Estimates{
			Window: est.Window(),
			Groups: est.Report(now.UnixMilli(), cardinality.Filter{}),
		}
	}
	if g := s.gw.Guard(); g != nil {
		st := g.Status()
		d.Guard = &st
	}
	if cs := s.clusterStatus(); cs.Enabled {
		d.Cluster = &explorer.Cluster{Self: cs.Self, Handover: cs.Handover}
		for _, m := range cs.Members {
			d.Cluster.Members = append(d.Cluster.Members, explorer.ClusterMember{Address: m.Address, State: m.State})
		}
	}
	for _, e := range Endpoints {
		d.Endpoints = append(d.Endpoints, explorer.Endpoint{Method: e.Method, Path: e.Path, Description: e.Description})
	}
	return d
}
