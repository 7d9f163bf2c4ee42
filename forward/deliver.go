package forward

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net/http"

	"github.com/klauspost/compress/s2"

	"github.com/cardinal-gateway/cardinal/wire"
)

// BodySender is what Deliver sends through; *Client implements it.
type BodySender interface {
	Send(ctx context.Context, body []byte) error
}

// V2Sender is a BodySender that can send remote write 2.0 as well; see
// Client.SendsV2 and Client.SendV2. Deliver encodes for it what SendsV2
// says, and sends again as 1.0 when SendV2 returns ErrFellBack.
type V2Sender interface {
	BodySender
	SendsV2() bool
	SendV2(ctx context.Context, body []byte, hasData bool) error
}

// Target is a BodySender with its remote write 2.0 side resolved once, by
// NewTarget. Asserting the interface on every request would let the
// runtime rebuild its type-assertion cache at random moments, which are
// allocations on a path whose budget is zero.
type Target struct {
	Body BodySender
	// V2 is Body as a V2Sender, or nil when it only sends 1.0.
	V2 V2Sender
}

// NewTarget returns the Target of s.
func NewTarget(s BodySender) Target {
	vs, _ := s.(V2Sender)
	return Target{Body: s, V2: vs}
}

// MetadataSeries is the Series of a Rejection that is about req.Metadata,
// which Deliver sends as one unit, rather than about a series.
const MetadataSeries = -1

// Rejection is one series the downstream refused on its own.
type Rejection struct {
	// Series is the index of the series in req.Series, or MetadataSeries.
	Series int
	// Samples is the number of float and histogram samples of the series
	// (0 for metadata); Histograms and Exemplars count those of the series.
	Samples, Histograms, Exemplars int
	// Err is the downstream's answer to the body holding just this series:
	// Status 400, with Code and Reason. When the request repeats a series,
	// several Rejections may share one Err.
	Err *Error
}

// Report says what one Deliver did. Series and samples that are neither
// delivered nor rejected were not attempted because a failure stopped the
// delivery.
type Report struct {
	// Sends is the number of bodies sent.
	Sends int
	// Split is set when the downstream rejected the request as a whole and
	// Deliver split it to isolate what it refuses.
	Split bool
	// DeliveredSeries and DeliveredSamples count what the downstream
	// acknowledged.
	DeliveredSeries, DeliveredSamples int
	// RejectedSeries and RejectedSamples count what it refused on its own
	// and was reported to onReject.
	RejectedSeries, RejectedSamples int
	// RejectedMetadata is set when it refused req.Metadata on its own.
	RejectedMetadata bool
}

// Scratch holds Deliver's reusable buffers (encoded and compressed bodies, a
// stack of ranges); keep one per goroutine and reuse it: after warm-up the
// fast path allocates nothing. The zero value is ready to use.
type Scratch struct {
	encoded    []byte
	compressed []byte
	stack      []part
	// refused holds the bodies refused during one Deliver, by hash and
	// length, with the answer they got. A request that repeats series can
	// produce the same body twice; the second is never sent. It is cleared
	// when Deliver returns so that it pins no Error.
	refused map[bodyKey]*Error
	seed    maphash.Seed

	// Metadata supplies the metadata of series sent as 2.0 that carry
	// none of their own (they came as 1.0, or are merged); nil leaves them
	// without.
	Metadata wire.MetadataSource
	symbols  wire.SymbolTable
	v2       bool          // the delivery in progress encodes 2.0
	one      []wire.Series // a series sent again without exemplars

	// Verbatim, when set, is a compressed remote write 1.0 body that says
	// exactly what the request does (wire.Request.Original of a request
	// that is Plain and that nothing changed). Deliver's fast path sends it
	// as it is, without encoding and compressing the request again, unless
	// the delivery is 2.0; a split encodes the request as usual. Deliver
	// clears it before it returns.
	Verbatim []byte
	// Cut says that Verbatim is the body the request came in with the
	// ranges of the series it lost cut out (see internal/snappycut), and
	// counts it apart. Deliver clears it too.
	Cut bool
}

// part is a range [lo, hi) of a request's items: item 0 is the request's
// metadata when it has any, the others are its series in order.
type part struct {
	lo, hi int
	// bare: the part is one series, sent again without its exemplars
	// because the downstream refused them (see delivery.rejected).
	bare bool
}

type bodyKey struct {
	hash uint64
	len  int
}

// Capacity reports how many bytes sc's buffers hold, so that a pool can
// refuse to keep a Scratch that one huge request grew.
func (sc *Scratch) Capacity() int {
	return cap(sc.encoded) + cap(sc.compressed)
}

// EncodeRange appends the remote-write 1.0 encoding of req.Series[from:to],
// followed by req.Metadata when withMetadata is set, to dst and returns the
// extended slice: byte for byte what MarshalAppend writes for a Request
// holding just those. It panics if from:to is not a valid slice of
// req.Series, as slicing does. It allocates only when dst lacks capacity.
func EncodeRange(dst []byte, req *wire.Request, from, to int, withMetadata bool) []byte {
	sub := wire.Request{Series: req.Series[from:to:to]}
	if withMetadata {
		sub.Metadata = req.Metadata
	}
	return sub.MarshalAppend(dst)
}

// Deliver sends req through s, as remote write 2.0 when s is a V2Sender
// whose SendsV2 says so, and as 1.0 otherwise. It returns nil when every
// series was either acknowledged or isolated and rejected; rejected series
// are reported to onReject (called synchronously, in order, at most once per
// series index of req.Series; nil reports nothing). A retryable failure
// returns the *Error (nothing more is attempted; the caller keeps the data
// and retries later).
//
// Fast path: req is encoded once into sc, snappy-compressed and sent in one
// body. An empty req (no series, no metadata) sends nothing.
//
// Slow path: when the downstream rejects a body (an error whose *Error has
// Status 400: it answered 400, 409 or 413), Deliver splits its series into
// two halves and sends each, re-encoded, until a rejected part is a single
// series, which is reported to onReject and not sent again. This is needed
// because Prometheus rolls back a whole request for one out-of-order,
// duplicate or out-of-bounds sample, and the sender would drop all of it.
// req.Metadata is one unit that travels with the first part only; when the
// downstream refuses it on its own, it is reported with Series
// MetadataSeries. A body identical to one already refused during this call
// (the request repeats series) is never sent again. For N series Deliver
// sends at most 2N-1 bodies (2N+1 with metadata); one bad series among N
// costs 1+2·⌈log₂N⌉.
//
// Any other error (retryable: Status 503; misconfiguration: Status 502; or
// an error that is not an *Error) stops the delivery and is returned as is;
// so is the end of ctx, as an *Error with Status 503. What was acknowledged
// before stays delivered, and the Report says how much that was. The
// sender's retry of the whole request resends those parts: the downstream
// accepts a series whose samples it already holds when they are identical
// and the series has one sample; an older sample of a multi-sample series
// is then out of order and that series is reported as rejected although it
// was stored by the first attempt.
//
// req is only read. Deliver relies on s to honour ctx; *Client does.
func Deliver(ctx context.Context, s BodySender, req *wire.Request, sc *Scratch, onReject func(Rejection)) (Report, error) {
	return (*DeliverMetrics)(nil).Deliver(ctx, NewTarget(s), req, sc, onReject)
}

// Deliver is the package function Deliver to t, counting splits and
// rejections into m. A nil m counts nothing.
func (m *DeliverMetrics) Deliver(ctx context.Context, t Target, req *wire.Request, sc *Scratch, onReject func(Rejection)) (Report, error) {
	s, vs := t.Body, t.V2
	sc.v2 = vs != nil && vs.SendsV2()
	defer func() { sc.Verbatim, sc.Cut = nil, false }()
	rep, err := m.deliver(ctx, s, vs, req, sc, onReject)
	if errors.Is(err, ErrFellBack) {
		// Slow path, once per Client: the downstream stored nothing of
		// the 2.0 bodies; everything goes again as 1.0. (A split delivery
		// that fell back halfway may send some series twice: they are
		// identical, which receivers accept.)
		sc.v2 = false
		var again Report
		again, err = m.deliver(ctx, s, vs, req, sc, onReject)
		again.Sends += rep.Sends
		rep = again
	}
	return rep, err
}

// send encodes req.Series[from:to] (with req.Metadata when withMeta) as
// sc.v2 says and sends it.
func (sc *Scratch) send(ctx context.Context, s BodySender, vs V2Sender, req *wire.Request, from, to int, withMeta bool) error {
	sc.encode(req, from, to, withMeta)
	return sc.sendEncoded(ctx, s, vs, req.Series[from:to])
}

// sendEncoded compresses and sends sc.encoded, the encoding of series.
func (sc *Scratch) sendEncoded(ctx context.Context, s BodySender, vs V2Sender, series []wire.Series) error {
	if n := s2.MaxEncodedLen(len(sc.encoded)); cap(sc.compressed) < n {
		// EncodeSnappy would allocate exactly n; a quarter to spare lets
		// the next, slightly larger body reuse it.
		sc.compressed = make([]byte, n+n/4)
	}
	sc.compressed = s2.EncodeSnappy(sc.compressed[:cap(sc.compressed)], sc.encoded)
	if sc.v2 {
		return vs.SendV2(ctx, sc.compressed, hasData(series))
	}
	return s.Send(ctx, sc.compressed)
}

// encodeRequest puts the encoding of sub's series, with meta when withMeta
// (1.0 only), into sc.encoded.
func (sc *Scratch) encodeRequest(sub *wire.Request, withMeta bool, meta []wire.Metadata) {
	if sc.v2 {
		sc.encoded = sub.MarshalAppendV2(sc.encoded[:0], &sc.symbols, sc.Metadata)
		return
	}
	if withMeta {
		sub.Metadata = meta
	}
	sc.encoded = sub.MarshalAppend(sc.encoded[:0])
}

// encode puts the encoding of req.Series[from:to] (and req.Metadata when
// withMeta, for 1.0) into sc.encoded.
func (sc *Scratch) encode(req *wire.Request, from, to int, withMeta bool) {
	switch {
	case sc.v2:
		sc.encoded = wire.AppendV2(sc.encoded[:0], req.Series[from:to:to], &sc.symbols, sc.Metadata)
	case from == 0 && to == len(req.Series) && withMeta == (len(req.Metadata) > 0):
		sc.encoded = req.MarshalAppend(sc.encoded[:0])
	default:
		sc.encoded = EncodeRange(sc.encoded[:0], req, from, to, withMeta)
	}
}

// hasData reports whether a 2.0 body of ss carries samples: AppendV2
// leaves out series without samples or histograms.
func hasData(ss []wire.Series) bool {
	for i := range ss {
		if len(ss[i].Samples) > 0 || len(ss[i].Histograms) > 0 {
			return true
		}
	}
	return false
}

func (m *DeliverMetrics) deliver(ctx context.Context, s BodySender, vs V2Sender, req *wire.Request, sc *Scratch, onReject func(Rejection)) (Report, error) {
	var rep Report
	meta := 0
	if len(req.Metadata) > 0 && !sc.v2 {
		// 2.0 has no place for 1.0's family metadata: it travels on the
		// series, from sc.Metadata.
		meta = 1
	}
	items := meta + len(req.Series)
	if items == 0 {
		return rep, nil
	}

	// Fast path: the whole request in one body.
	var err error
	verbatim := sc.Verbatim != nil && !sc.v2
	if verbatim {
		m.countVerbatim(sc.Cut)
		err = s.Send(ctx, sc.Verbatim)
	} else {
		err = sc.send(ctx, s, vs, req, 0, len(req.Series), meta == 1)
	}
	if sc.v2 {
		m.countUnsendable(sc.symbols.Unsendable)
	}
	rep.Sends++
	if err == nil {
		rep.DeliveredSeries = len(req.Series)
		rep.DeliveredSamples = req.NumSamples()
		return rep, nil
	}
	e, ok := rejection(err)
	if !ok {
		return rep, err
	}
	if verbatim {
		// The split below compares its bodies with this one's encoding.
		sc.encode(req, 0, len(req.Series), meta == 1)
	}

	// Slow path: isolate what the downstream refuses.
	if items > 1 {
		rep.Split = true
		m.countSplit()
	}
	d := delivery{m: m, req: req, sc: sc, meta: meta, onReject: onReject, rep: &rep}
	sc.stack = sc.stack[:0]
	if sc.refused == nil {
		sc.refused = make(map[bodyKey]*Error)
		sc.seed = maphash.MakeSeed()
	}
	defer clear(sc.refused)
	sc.refused[sc.key()] = e
	d.rejected(part{lo: 0, hi: items}, e)

	for len(sc.stack) > 0 {
		p := sc.stack[len(sc.stack)-1]
		sc.stack = sc.stack[:len(sc.stack)-1]
		if err := ctx.Err(); err != nil {
			return rep, &Error{
				Status: http.StatusServiceUnavailable,
				Msg:    fmt.Sprintf("delivery of a split request stopped after %d sends", rep.Sends),
				Err:    err,
			}
		}
		from, to, withMeta := d.series(p)
		series := req.Series[from:to]
		if p.bare {
			sc.one = append(sc.one[:0], req.Series[from])
			sc.one[0].Exemplars = nil
			series = sc.one
			sub := wire.Request{Series: sc.one}
			sc.encodeRequest(&sub, withMeta, req.Metadata)
		} else {
			sc.encode(req, from, to, withMeta)
		}
		key := sc.key()
		if prev, seen := sc.refused[key]; seen {
			d.rejected(p, prev)
			continue
		}
		err := sc.sendEncoded(ctx, s, vs, series)
		rep.Sends++
		if err == nil {
			rep.DeliveredSeries += to - from
			rep.DeliveredSamples += numSamples(series)
			if p.bare {
				m.countRefusedExemplars(len(req.Series[from].Exemplars))
			}
			continue
		}
		e, ok := rejection(err)
		if !ok {
			return rep, err
		}
		sc.refused[key] = e
		d.rejected(p, e)
	}
	return rep, nil
}

// delivery is the state of one slow-path Deliver.
type delivery struct {
	m        *DeliverMetrics
	req      *wire.Request
	sc       *Scratch
	meta     int // 1 when item 0 is the metadata
	onReject func(Rejection)
	rep      *Report
}

// series maps the items of p to a range of req.Series and whether the
// metadata goes with it.
func (d *delivery) series(p part) (from, to int, withMeta bool) {
	if d.meta == 0 {
		return p.lo, p.hi, false
	}
	return max(p.lo-1, 0), p.hi - 1, p.lo == 0
}

// rejected handles a refused part: a single item is reported, a larger part
// is split in two halves, pushed so that the first half is sent first and
// onReject sees the items in order. The stack never holds more than
// ⌈log₂N⌉+1 parts.
//
// A single series with exemplars that the downstream refused for one of
// its exemplars (Prometheus 3 answers 400 for an out-of-order exemplar,
// having stored the samples) is sent once more without them: the samples
// matter, and the exemplars are counted as refused.
func (d *delivery) rejected(p part, e *Error) {
	if p.hi-p.lo > 1 {
		mid := p.lo + (p.hi-p.lo)/2
		d.sc.stack = append(d.sc.stack, part{lo: mid, hi: p.hi}, part{lo: p.lo, hi: mid})
		return
	}
	if i := p.lo - d.meta; !p.bare && i >= 0 && len(d.req.Series[i].Exemplars) > 0 && containsFold([]byte(e.Msg), "exemplar") &&
		(len(d.req.Series[i].Samples) > 0 || len(d.req.Series[i].Histograms) > 0) {
		d.sc.stack = append(d.sc.stack, part{lo: p.lo, hi: p.hi, bare: true})
		return
	}
	r := Rejection{Series: p.lo - d.meta, Err: e}
	if r.Series == MetadataSeries {
		d.rep.RejectedMetadata = true
	} else {
		s := &d.req.Series[r.Series]
		r.Samples = len(s.Samples) + len(s.Histograms)
		r.Histograms, r.Exemplars = len(s.Histograms), len(s.Exemplars)
		d.rep.RejectedSeries++
		d.rep.RejectedSamples += r.Samples
		d.m.countRejected(e.Reason, r.Samples)
	}
	if d.onReject != nil {
		d.onReject(r)
	}
}

// key identifies the body in sc.encoded. The uncompressed body stands for
// the compressed one: s2.EncodeSnappy is deterministic.
func (sc *Scratch) key() bodyKey {
	return bodyKey{hash: maphash.Bytes(sc.seed, sc.encoded), len: len(sc.encoded)}
}

// rejection returns the *Error in err when it says the downstream refused
// the data itself.
func rejection(err error) (*Error, bool) {
	e, ok := errors.AsType[*Error](err)
	if !ok || e.Status != http.StatusBadRequest {
		return nil, false
	}
	return e, true
}

func numSamples(ss []wire.Series) int {
	n := 0
	for i := range ss {
		n += len(ss[i].Samples) + len(ss[i].Histograms)
	}
	return n
}
