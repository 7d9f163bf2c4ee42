package meshgen

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/prometheus/prompb"
)

// TextContentType is the Content-Type of the text exposition format 0.0.4.
const TextContentType = "text/plain; version=0.0.4; charset=utf-8"

// WriteText writes the series of step in the Prometheus text exposition
// format 0.0.4, without timestamps and without the job and instance labels,
// which the scraping Prometheus adds. Each family is introduced by # HELP and
// # TYPE lines and its samples are contiguous; label values are escaped.
// Scraped with honor_labels unset, the result matches Series for the same
// step apart from job and instance.
func (g *Generator) WriteText(w io.Writer, step int) error {
	series := g.Series(step, 0)
	bw := bufio.NewWriterSize(w, 64<<10)
	var buf []byte
	var cur *family
	for i := range g.units {
		u := &g.units[i]
		if u.fam != cur {
			cur = u.fam
			buf = append(buf[:0], "# HELP "...)
			buf = append(buf, cur.name...)
			buf = append(buf, ' ')
			buf = append(buf, cur.help...)
			buf = append(buf, "\n# TYPE "...)
			buf = append(buf, cur.name...)
			buf = append(buf, ' ')
			buf = append(buf, cur.typ.String()...)
			buf = append(buf, '\n')
			if _, err := bw.Write(buf); err != nil {
				return err
			}
		}
		for _, s := range series[u.first : u.first+u.seriesCount()] {
			buf = appendTextLine(buf[:0], &s.Labels, s.Samples[0].Value)
			if _, err := bw.Write(buf); err != nil {
				return err
			}
		}
	}
	return bw.Flush()
}

func appendTextLine(buf []byte, ls *[]prompb.Label, v float64) []byte {
	first := true
	for _, l := range *ls {
		switch l.Name {
		case "__name__":
			buf = append(buf, l.Value...)
			continue
		case "job", "instance":
			continue
		}
		if first {
			buf = append(buf, '{')
			first = false
		} else {
			buf = append(buf, ',')
		}
		buf = append(buf, l.Name...)
		buf = append(buf, '=', '"')
		buf = appendEscaped(buf, l.Value)
		buf = append(buf, '"')
	}
	if !first {
		buf = append(buf, '}')
	}
	buf = append(buf, ' ')
	buf = strconv.AppendFloat(buf, v, 'g', -1, 64)
	return append(buf, '\n')
}

// appendEscaped escapes a label value as the text format requires:
// backslash, double quote and line feed.
func appendEscaped(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			buf = append(buf, '\\', '\\')
		case '"':
			buf = append(buf, '\\', '"')
		case '\n':
			buf = append(buf, '\\', 'n')
		default:
			buf = append(buf, c)
		}
	}
	return buf
}

// StepHeader is the response header in which Handler reports the step it served.
const StepHeader = "X-Meshgen-Step"

// Handler returns an http.Handler that serves WriteText. Each request serves
// the next step — 0 for the first request to this handler, then 1, 2, ... —
// so every scrape sees counters advance; concurrent requests get distinct
// steps. The step served is reported in the StepHeader response header, so a
// test can compute the expected series with Series. Every call to Handler
// returns a handler with its own counter. HEAD requests report the next step
// without consuming it.
func (g *Generator) Handler() http.Handler {
	return &handler{g: g}
}

type handler struct {
	g    *Generator
	next atomic.Int64
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", TextContentType)
	if r.Method == http.MethodHead {
		// HEAD does not consume a step; it reports the one GET would serve.
		w.Header().Set(StepHeader, strconv.FormatInt(h.next.Load(), 10))
		return
	}
	step := int(h.next.Add(1) - 1)
	w.Header().Set(StepHeader, strconv.Itoa(step))
	// The status line is out once the body starts; a write error means the
	// client went away and there is no one left to tell.
	_ = h.g.WriteText(w, step)
}
