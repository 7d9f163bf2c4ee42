package server

import (
	"net/http"
	"time"

	"github.com/cardinal-gateway/cardinal/admin"
	"github.com/cardinal-gateway/cardinal/cardinality"
	"github.com/cardinal-gateway/cardinal/guard"
)

// labelsAnswer is GET /api/v1/cardinality/labels.
type labelsAnswer struct {
	WindowSeconds float64 `json:"window_seconds"`
	// RelativeError is the estimates' relative standard error; counts up
	// to ExactUpTo are exact.
	RelativeError float64                   `json:"relative_error"`
	ExactUpTo     int                       `json:"exact_up_to"`
	Groups        []cardinality.GroupReport `json:"groups"`
}

// workloadsAnswer is GET /api/v1/cardinality/workloads.
type workloadsAnswer struct {
	WindowSeconds float64                      `json:"window_seconds"`
	RelativeError float64                      `json:"relative_error"`
	ExactUpTo     int                          `json:"exact_up_to"`
	Workloads     []cardinality.WorkloadReport `json:"workloads"`
}

func (s *Server) requireEstimator(w http.ResponseWriter) *cardinality.Estimator {
	est := s.gw.Estimator()
	if est == nil {
		admin.WriteError(w, http.StatusNotFound, "the estimates are off: set cardinality.enabled: true (or configure the guard)")
	}
	return est
}

// serveLabels answers the estimates of the (workload, metric) groups that
// match the workload and metric parameters (both optional), at most top
// groups, each with its top labels by distinct values after the rules.
func (s *Server) serveLabels(w http.ResponseWriter, r *http.Request) {
	top, err := admin.TopParam(r)
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	est := s.requireEstimator(w)
	if est == nil {
		return
	}
	q := r.URL.Query()
	groups := est.Report(time.Now().UnixMilli(), cardinality.Filter{Workload: q.Get("workload"), Metric: q.Get("metric"), TopLabels: top})
	if len(groups) > top {
		groups = groups[:top]
	}
	if groups == nil {
		groups = []cardinality.GroupReport{}
	}
	admin.WriteJSON(w, http.StatusOK, labelsAnswer{
		WindowSeconds: est.Window().Seconds(), RelativeError: cardinality.RelativeError, ExactUpTo: cardinality.SmallMax, Groups: groups,
	})
}

// serveWorkloads answers the estimates summed per workload.
func (s *Server) serveWorkloads(w http.ResponseWriter, r *http.Request) {
	top, err := admin.TopParam(r)
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	est := s.requireEstimator(w)
	if est == nil {
		return
	}
	wls := cardinality.Workloads(est.Report(time.Now().UnixMilli(), cardinality.Filter{TopLabels: 1}))
	if len(wls) > top {
		wls = wls[:top]
	}
	if wls == nil {
		wls = []cardinality.WorkloadReport{}
	}
	admin.WriteJSON(w, http.StatusOK, workloadsAnswer{
		WindowSeconds: est.Window().Seconds(), RelativeError: cardinality.RelativeError, ExactUpTo: cardinality.SmallMax, Workloads: wls,
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
