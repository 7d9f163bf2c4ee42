package server

import (
	"net/http"
	"time"

	"github.com/cardinal-gateway/cardinal/admin"
	"github.com/cardinal-gateway/cardinal/cardinality"
	"github.com/cardinal-gateway/cardinal/guard"
)

func (s *Server) requireEstimator(w http.ResponseWriter) *cardinality.Estimator {
	est := s.gw.Estimator()
	if est == nil {
		admin.WriteError(w, http.StatusNotFound, "the estimates are off: set cardinality.enabled: true (or configure the guard)")
	}
	return est
}

// estimatesAnswer is the envelope of the estimates' endpoints.
type estimatesAnswer struct {
	WindowSeconds float64 `json:"window_seconds"`
	// RelativeError is the estimates' relative standard error; counts up
	// to ExactUpTo are exact.
	RelativeError float64 `json:"relative_error"`
	ExactUpTo     int     `json:"exact_up_to"`
	Groups        any     `json:"groups,omitempty"`
	Workloads     any     `json:"workloads,omitempty"`
}

// serveEstimates reads top and answers what answer makes of the estimates,
// or the reason there are none.
func (s *Server) serveEstimates(w http.ResponseWriter, r *http.Request, answer func(est *cardinality.Estimator, top int, a *estimatesAnswer)) {
	top, err := admin.TopParam(r)
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	est := s.requireEstimator(w)
	if est == nil {
		return
	}
	a := estimatesAnswer{WindowSeconds: est.Window().Seconds(), RelativeError: cardinality.RelativeError, ExactUpTo: cardinality.SmallMax}
	answer(est, top, &a)
	admin.WriteJSON(w, http.StatusOK, a)
}

// serveLabels answers the estimates of the (workload, metric) groups that
// match the workload and metric parameters (both optional), at most top
// groups, each with its top labels by distinct values after the rules.
func (s *Server) serveLabels(w http.ResponseWriter, r *http.Request) {
	s.serveEstimates(w, r, func(est *cardinality.Estimator, top int, a *estimatesAnswer) {
		q := r.URL.Query()
		groups := est.Report(time.Now().UnixMilli(), cardinality.Filter{Workload: q.Get("workload"), Metric: q.Get("metric"), TopLabels: top})
		a.Groups = append([]cardinality.GroupReport{}, groups[:min(top, len(groups))]...)
	})
}

// serveWorkloads answers the estimates summed per workload.
func (s *Server) serveWorkloads(w http.ResponseWriter, r *http.Request) {
	s.serveEstimates(w, r, func(est *cardinality.Estimator, top int, a *estimatesAnswer) {
		wls := cardinality.Workloads(est.Report(time.Now().UnixMilli(), cardinality.Filter{TopLabels: 1}))
		a.Workloads = append([]cardinality.WorkloadReport{}, wls[:min(top, len(wls))]...)
	})
}

// serveGuard answers the guard's settings, mitigations and events.
func (s *Server) serveGuard(w http.ResponseWriter, _ *http.Request) {
	g := s.gw.Guard()
	if g == nil {
		admin.WriteJSON(w, http.StatusOK, guard.Status{Mode: "off", Active: []guard.Mitigation{}, Events: []guard.Event{}})
		return
	}
	admin.WriteJSON(w, http.StatusOK, g.Status())
}
