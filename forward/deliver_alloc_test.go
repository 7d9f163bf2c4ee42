package forward

import (
	"bytes"
	"context"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
	"github.com/cardinal-gateway/cardinal/wire"
)

// meshRequests returns successive scrapes of a 2000-series mesh request,
// with fresh request ids every step, decoded as the gateway receives them.
// When poisonEvery is positive, every poisonEvery-th series carries the
// label poison="ooo".
func meshRequests(tb testing.TB, steps, poisonEvery int) []*wire.Request {
	tb.Helper()
	gen := meshgen.New(meshgen.Config{Workloads: 24, PodsPerWorkload: 3, Churn: true, Seed: 7})
	reqs := make([]*wire.Request, steps)
	for step := range steps {
		pb := gen.WriteRequests(step, 1_700_000_000_000+int64(step)*15_000, 2000)[0]
		if poisonEvery > 0 {
			for i := poisonEvery / 2; i < len(pb.Timeseries); i += poisonEvery {
				ts := &pb.Timeseries[i]
				ts.Labels = append(ts.Labels[:len(ts.Labels):len(ts.Labels)], prompb.Label{Name: "poison", Value: "ooo"})
			}
		}
		raw, err := pb.Marshal()
		if err != nil {
			tb.Fatal(err)
		}
		reqs[step] = &wire.Request{}
		if err := reqs[step].Unmarshal(raw); err != nil {
			tb.Fatal(err)
		}
	}
	return reqs
}

// acceptSender acknowledges every body.
type acceptSender struct{}

func (acceptSender) Send(context.Context, []byte) error { return nil }

// poisonSender is an allocation-free downstream with Prometheus' rollback:
// it refuses every body holding a series labelled poison.
type poisonSender struct {
	buf   []byte
	err   *Error
	sends int
}

func newPoisonSender() *poisonSender {
	return &poisonSender{err: &Error{Status: 400, Code: 400, Reason: ReasonOutOfOrder, Msg: "out of order sample"}}
}

func (s *poisonSender) Send(_ context.Context, body []byte) error {
	s.sends++
	raw, err := snappy.Decode(s.buf[:cap(s.buf)], body)
	if err != nil {
		return &Error{Status: 400, Msg: err.Error()}
	}
	s.buf = raw
	if bytes.Contains(raw, []byte("poison")) {
		return s.err
	}
	return nil
}

// v2Sender wraps a sender as a 2.0 one: the split path's poison check
// works on either encoding since label bytes appear as symbols.
type v2Sender struct{ BodySender }

func (v2Sender) SendsV2() bool { return true }
func (s v2Sender) SendV2(ctx context.Context, body []byte, _ bool) error {
	return s.Send(ctx, body)
}

func TestDeliverAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	m, err := NewDeliverMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	rejected := 0
	onReject := func(Rejection) { rejected++ }
	measure := func(name string, s BodySender, reqs []*wire.Request, wantRejected int) {
		t.Helper()
		var sc Scratch
		tg := NewTarget(s)
		deliver := func(req *wire.Request) {
			rejected = 0
			if _, err := m.Deliver(context.Background(), tg, req, &sc, onReject); err != nil {
				t.Fatal(err)
			}
			if rejected != wantRejected {
				t.Fatalf("%s: %d rejections, want %d", name, rejected, wantRejected)
			}
		}
		// Warm-up: every buffer of sc reaches its steady-state capacity.
		for _, req := range reqs {
			deliver(req)
		}
		i := 0
		if n := testing.AllocsPerRun(40, func() {
			deliver(reqs[i%len(reqs)])
			i++
		}); n != 0 {
			t.Errorf("%s allocates %v times per request", name, n)
		}
	}
	measure("fast path", acceptSender{}, meshRequests(t, 4, 0), 0)
	measure("split path, 10 bad series of 2000", newPoisonSender(), meshRequests(t, 4, 200), 10)
	measure("split path, 100 bad series of 2000", newPoisonSender(), meshRequests(t, 4, 20), 100)
	measure("2.0 fast path", v2Sender{acceptSender{}}, meshRequests(t, 4, 0), 0)
	measure("2.0 split path, 10 bad series of 2000", v2Sender{newPoisonSender()}, meshRequests(t, 4, 200), 10)
}

func BenchmarkDeliver(b *testing.B) {
	for _, bc := range []struct {
		name        string
		poisonEvery int
		v2          bool
	}{
		{"fast path", 0, false},
		{"1 bad series of 2000", 2000, false},
		{"10 bad series of 2000", 200, false},
		{"100 bad series of 2000", 20, false},
		{"2.0 fast path", 0, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			reqs := meshRequests(b, 4, bc.poisonEvery)
			ps := newPoisonSender()
			var s BodySender = ps
			if bc.v2 {
				s = v2Sender{ps}
			}
			var sc Scratch
			bytes := 0
			for _, req := range reqs {
				bytes += len(req.MarshalAppend(nil))
				if _, err := Deliver(context.Background(), s, req, &sc, nil); err != nil {
					b.Fatal(err)
				}
			}
			ps.sends = 0
			b.ReportAllocs()
			b.SetBytes(int64(bytes / len(reqs)))
			i := 0
			for b.Loop() {
				if _, err := Deliver(context.Background(), s, reqs[i%len(reqs)], &sc, nil); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(len(reqs[0].Series))*float64(b.N)/b.Elapsed().Seconds(), "series/s")
			b.ReportMetric(float64(ps.sends)/float64(b.N), "sends/op")
		})
	}
}
