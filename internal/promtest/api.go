package promtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is one element of an instant vector.
type Sample struct {
	Labels    map[string]string
	Value     float64
	Timestamp time.Time
}

// Exemplar is one exemplar returned by /api/v1/query_exemplars.
type Exemplar struct {
	Labels    map[string]string
	Value     float64
	Timestamp time.Time
}

// ExemplarSeries holds the exemplars of one series.
type ExemplarSeries struct {
	SeriesLabels map[string]string
	Exemplars    []Exemplar
}

// ErrMetricNotFound is returned by Metric when /metrics has no family of the
// name, for example a remote-write metric before the queue has started.
var ErrMetricNotFound = errors.New("metric not found")

// apiResponse is the envelope of every /api/v1 answer.
type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
}

// Query runs the instant query expr at the current time through
// /api/v1/query. A vector result gives one Sample per series, a scalar one
// Sample with no labels; other result types are an error. Agent-mode
// processes cannot be queried.
func (p *Prometheus) Query(ctx context.Context, expr string) ([]Sample, error) {
	data, err := p.get(ctx, "/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return nil, err
	}
	var res struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		return nil, fmt.Errorf("cannot decode query result: %w", err)
	}
	switch res.ResultType {
	case "vector":
		var vec []struct {
			Metric map[string]string `json:"metric"`
			Value  pointJSON         `json:"value"`
		}
		if err := json.Unmarshal(res.Result, &vec); err != nil {
			return nil, fmt.Errorf("cannot decode vector: %w", err)
		}
		out := make([]Sample, 0, len(vec))
		for _, s := range vec {
			out = append(out, Sample{Labels: s.Metric, Value: s.Value.v, Timestamp: s.Value.t})
		}
		return out, nil
	case "scalar":
		var pt pointJSON
		if err := json.Unmarshal(res.Result, &pt); err != nil {
			return nil, fmt.Errorf("cannot decode scalar: %w", err)
		}
		return []Sample{{Labels: map[string]string{}, Value: pt.v, Timestamp: pt.t}}, nil
	default:
		return nil, fmt.Errorf("query %q: unsupported result type %q", expr, res.ResultType)
	}
}

// Point is one sample of a range vector.
type Point struct {
	T time.Time
	V float64
}

// RangeSeries is one series of a range vector.
type RangeSeries struct {
	Labels map[string]string
	Points []Point // oldest first
}

// QueryMatrix runs the instant query expr, a range selector such as
// {job="mesh"}[15m], at time at through /api/v1/query and returns the raw
// samples it selects: what the receiver stored, before any function.
func (p *Prometheus) QueryMatrix(ctx context.Context, expr string, at time.Time) ([]RangeSeries, error) {
	data, err := p.get(ctx, "/api/v1/query", url.Values{"query": {expr}, "time": {formatTime(at)}})
	if err != nil {
		return nil, err
	}
	var res struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Values []pointJSON       `json:"values"`
		} `json:"result"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		return nil, fmt.Errorf("cannot decode query result: %w", err)
	}
	if res.ResultType != "matrix" {
		return nil, fmt.Errorf("query %q: result type %q, want matrix", expr, res.ResultType)
	}
	out := make([]RangeSeries, 0, len(res.Result))
	for _, s := range res.Result {
		pts := make([]Point, len(s.Values))
		for i, v := range s.Values {
			pts[i] = Point{T: v.t, V: v.v}
		}
		out = append(out, RangeSeries{Labels: s.Metric, Points: pts})
	}
	return out, nil
}

// Series returns the label sets of all series matching the series selector
// match, over all stored time, through /api/v1/series.
func (p *Prometheus) Series(ctx context.Context, match string) ([]map[string]string, error) {
	data, err := p.get(ctx, "/api/v1/series", url.Values{"match[]": {match}})
	if err != nil {
		return nil, err
	}
	var out []map[string]string
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("cannot decode series: %w", err)
	}
	return out, nil
}

// QueryExemplars returns the exemplars of the series selected by expr
// between start and end through /api/v1/query_exemplars. The server must run
// with Features "exemplar-storage", or the result is always empty.
func (p *Prometheus) QueryExemplars(ctx context.Context, expr string, start, end time.Time) ([]ExemplarSeries, error) {
	data, err := p.get(ctx, "/api/v1/query_exemplars", url.Values{
		"query": {expr},
		"start": {formatTime(start)},
		"end":   {formatTime(end)},
	})
	if err != nil {
		return nil, err
	}
	var raw []struct {
		SeriesLabels map[string]string `json:"seriesLabels"`
		Exemplars    []struct {
			Labels    map[string]string `json:"labels"`
			Value     string            `json:"value"`
			Timestamp float64           `json:"timestamp"`
		} `json:"exemplars"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("cannot decode exemplars: %w", err)
	}
	out := make([]ExemplarSeries, 0, len(raw))
	for _, s := range raw {
		es := ExemplarSeries{SeriesLabels: s.SeriesLabels, Exemplars: make([]Exemplar, 0, len(s.Exemplars))}
		for _, e := range s.Exemplars {
			v, err := strconv.ParseFloat(e.Value, 64)
			if err != nil {
				return nil, fmt.Errorf("cannot parse exemplar value %q: %w", e.Value, err)
			}
			es.Exemplars = append(es.Exemplars, Exemplar{Labels: e.Labels, Value: v, Timestamp: floatTime(e.Timestamp)})
		}
		out = append(out, es)
	}
	return out, nil
}

// Metric reads the process' own /metrics and returns the sum of all series
// of the counter, gauge or untyped family name, e.g. MetricSamplesFailed.
// It returns an error wrapping ErrMetricNotFound if the family is absent and
// an error for histograms and summaries.
func (p *Prometheus) Metric(ctx context.Context, name string) (float64, error) {
	fams, err := p.metricFamilies(ctx)
	if err != nil {
		return 0, err
	}
	return sumFamily(fams, name)
}

// RemoteWriteStats is a snapshot of the sender's sample counters, summed
// over all remote_write queues.
type RemoteWriteStats struct {
	In      float64 // MetricSamplesIn
	Total   float64 // MetricSamplesTotal: samples in all send attempts
	Failed  float64 // MetricSamplesFailed
	Retried float64 // MetricSamplesRetried
	Dropped float64 // MetricSamplesDropped
	Pending float64 // MetricSamplesPending
}

// Succeeded estimates the samples delivered: Total - Failed - Retried. 2.42
// counts Total before each attempt and Retried after it fails, so while a
// retry is in flight the estimate is too high by that batch.
func (s RemoteWriteStats) Succeeded() float64 { return s.Total - s.Failed - s.Retried }

// RemoteWriteStats reads the sender's remote-write sample counters from one
// scrape of its /metrics. It fails with ErrMetricNotFound until a
// remote_write queue exists.
func (p *Prometheus) RemoteWriteStats(ctx context.Context) (RemoteWriteStats, error) {
	fams, err := p.metricFamilies(ctx)
	if err != nil {
		return RemoteWriteStats{}, err
	}
	var s RemoteWriteStats
	for _, f := range []struct {
		name string
		dst  *float64
	}{
		{MetricSamplesIn, &s.In},
		{MetricSamplesTotal, &s.Total},
		{MetricSamplesFailed, &s.Failed},
		{MetricSamplesRetried, &s.Retried},
		{MetricSamplesDropped, &s.Dropped},
		{MetricSamplesPending, &s.Pending},
	} {
		if *f.dst, err = sumFamily(fams, f.name); err != nil {
			return RemoteWriteStats{}, err
		}
	}
	return s, nil
}

func (p *Prometheus) metricFamilies(ctx context.Context) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot get /metrics: %w", err)
	}
	defer drainClose(resp)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("cannot get /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("cannot parse /metrics: %w", err)
	}
	return fams, nil
}

func sumFamily(fams map[string]*dto.MetricFamily, name string) (float64, error) {
	f, ok := fams[name]
	if !ok {
		return 0, fmt.Errorf("%s: %w", name, ErrMetricNotFound)
	}
	var sum float64
	for _, m := range f.GetMetric() {
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			sum += m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			sum += m.GetGauge().GetValue()
		case dto.MetricType_UNTYPED:
			sum += m.GetUntyped().GetValue()
		default:
			return 0, fmt.Errorf("%s: cannot sum a %s", name, f.GetType())
		}
	}
	return sum, nil
}

// get calls an /api/v1 endpoint and returns the data of a successful answer.
func (p *Prometheus) get(ctx context.Context, path string, q url.Values) (json.RawMessage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+path+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot get %s: %w", path, err)
	}
	defer drainClose(resp)
	var env apiResponse
	// Raw samples of a whole test run can be tens of megabytes.
	if err := json.NewDecoder(io.LimitReader(resp.Body, 256<<20)).Decode(&env); err != nil {
		return nil, fmt.Errorf("cannot decode %s answer (%s): %w", path, resp.Status, err)
	}
	if env.Status != "success" {
		return nil, fmt.Errorf("%s: %s: %s: %s", path, resp.Status, env.ErrorType, env.Error)
	}
	return env.Data, nil
}

// pointJSON decodes the API's [unix_seconds, "value"] pair.
type pointJSON struct {
	t time.Time
	v float64
}

func (pt *pointJSON) UnmarshalJSON(b []byte) error {
	var raw [2]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	var ts float64
	if err := json.Unmarshal(raw[0], &ts); err != nil {
		return fmt.Errorf("cannot decode timestamp: %w", err)
	}
	var s string
	if err := json.Unmarshal(raw[1], &s); err != nil {
		return fmt.Errorf("cannot decode value: %w", err)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("cannot parse value %q: %w", s, err)
	}
	pt.t, pt.v = floatTime(ts), v
	return nil
}

func floatTime(sec float64) time.Time {
	whole, frac := math.Modf(sec)
	return time.Unix(int64(whole), int64(math.Round(frac*1e9/1e6))*1e6)
}

func formatTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1e3, 'f', 3, 64)
}

func drainClose(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
}
