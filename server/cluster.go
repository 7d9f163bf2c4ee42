package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cardinal-gateway/cardinal/admin"
	"github.com/cardinal-gateway/cardinal/cluster"
)

// ScopeHeader, on the answers of the reporting APIs of a replica in a
// cluster, says that they show this replica's share of the tier.
const ScopeHeader = "X-Cardinal-Scope"

// clusterMember is one member in GET /api/v1/cluster.
type clusterMember struct {
	Address string `json:"address"`
	// State is self, up, or down (failing its probes: its share is
	// answered 503 until it answers again or leaves the view).
	State string `json:"state"`
}

// clusterAnswer is GET /api/v1/cluster.
type clusterAnswer struct {
	Enabled bool            `json:"enabled"`
	Self    string          `json:"self,omitempty"`
	Members []clusterMember `json:"members"`
	ViewID  string          `json:"view_id,omitempty"`
	// Since is when the member set last changed; Handover says whether
	// workloads that moved here are still answered 503.
	Since    time.Time `json:"since,omitzero"`
	Handover bool      `json:"handover_in_progress"`
	// OwnedWorkloads are the workloads this replica owns and has seen.
	OwnedWorkloads int    `json:"owned_workloads"`
	PeerTimeout    string `json:"peer_timeout,omitempty"`
	HandoverDelay  string `json:"handover_delay,omitempty"`
	Note           string `json:"note"`
}

// clusterStatus is what GET /api/v1/cluster and the explorer page say of
// the cluster.
func (s *Server) clusterStatus() clusterAnswer {
	c := s.gw.Cluster()
	if c == nil {
		return clusterAnswer{Members: []clusterMember{}, OwnedWorkloads: len(s.gw.OwnedWorkloads()),
			Note: "not in a cluster: this Cardinal owns every workload it receives"}
	}
	v := c.View()
	a := clusterAnswer{
		Enabled: true, Self: c.Self(), ViewID: fmt.Sprintf("%x", v.ID), Since: v.Since, Handover: v.Settling(time.Now()),
		OwnedWorkloads: len(s.gw.OwnedWorkloads()),
		PeerTimeout:    c.Config().PeerTimeout.String(), HandoverDelay: c.Config().HandoverDelay.String(),
		Note: fmt.Sprintf("replica %s of %d: its reporting APIs and page show the workloads it owns, its share of the tier; ask every member for the whole tier", c.Self(), len(v.Members)),
	}
	for i, m := range v.Members {
		st := "up"
		switch {
		case i == v.Self:
			st = "self"
		case v.Down(i):
			st = "down"
		}
		a.Members = append(a.Members, clusterMember{Address: m, State: st})
	}
	return a
}

func (s *Server) serveCluster(w http.ResponseWriter, _ *http.Request) {
	admin.WriteJSON(w, http.StatusOK, s.clusterStatus())
}

// scoped marks the answers of a reporting API as one replica's share.
func (s *Server) scoped(next http.Handler) http.Handler {
	c := s.gw.Cluster()
	if c == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := c.View()
		w.Header().Set(ScopeHeader, fmt.Sprintf("replica %s's share (1 of %d replicas); GET /api/v1/cluster lists them", c.Self(), len(v.Members)))
		next.ServeHTTP(w, r)
	})
}

// tierWide applies a successful limit change (PUT or DELETE
// /api/v1/limits/...) to every other member too: the workload's owner
// applies its cap, and may change with the membership. It answers 502
// when a member could not take it, naming them; the call is idempotent,
// so the operator repeats it.
func (s *Server) tierWide(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.gw.Cluster()
		if c == nil || r.Header.Get(cluster.FromHeader) != "" {
			next(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err != nil {
			admin.WriteError(w, http.StatusBadRequest, "cannot read body: "+err.Error())
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		next(rec, r)
		if rec.Code >= 300 {
			copyRecorded(w, rec)
			return
		}
		failed := s.fanOut(r, body, c)
		if len(failed) == 0 {
			copyRecorded(w, rec)
			return
		}
		admin.WriteError(w, http.StatusBadGateway, fmt.Sprintf("applied on this replica (%s) and the members that answered, but not on: %s; repeat the call once they are up",
			c.Self(), strings.Join(failed, "; ")))
	}
}

// fanOut repeats r on every other member and returns the failures.
func (s *Server) fanOut(r *http.Request, body []byte, c *cluster.Cluster) []string {
	v := c.View()
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	var mu sync.Mutex
	var failed []string
	var wg sync.WaitGroup
	for i, m := range v.Members {
		if i == v.Self {
			continue
		}
		wg.Go(func() {
			req, err := http.NewRequestWithContext(ctx, r.Method, "http://"+m+r.URL.RequestURI(), bytes.NewReader(body))
			if err == nil {
				req.Header.Set("Authorization", r.Header.Get("Authorization"))
				req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
				req.Header.Set(cluster.FromHeader, c.Self())
				var resp *http.Response
				if resp, err = peerAdminClient.Do(req); err == nil {
					msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
					resp.Body.Close()
					if resp.StatusCode >= 300 {
						err = fmt.Errorf("answered %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
					}
				}
			}
			if err != nil {
				mu.Lock()
				failed = append(failed, fmt.Sprintf("%s (%v)", m, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(failed)
	return failed
}

var peerAdminClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}}

func copyRecorded(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}
