package merge

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/wire"
)

// The state file keeps the merged outputs across restarts: their labels,
// the last point queued for each (timestamp and counter value), and every
// input's state (live and retired: value, offset, timestamp, histogram),
// so that a restarted Cardinal continues each merged output exactly where
// the previous process was when it saved. Without it, the first input of a
// formerly merged output would pass through with the sender's timestamp,
// older than the merged sample already downstream (the downstream rejects
// that as out of order, and the sender's whole request with it), and the
// merged counters would restart from the inputs that happen to report first
// (a partial sum that looks like a reset).
//
// It is saved every minute and at shutdown; after a crash the restored
// state is at most a minute old, and the inputs' next samples, which carry
// their cumulative values, bring the counters back to exact. Samples at or
// before a restored input's timestamp are skipped as already counted.
//
// Format: the magic, then one record per merged output, every integer a
// varint (binary.AppendUvarint / AppendVarint), every float its IEEE bits
// as a uvarint, every byte string length-prefixed. See writeOutput.
const (
	stateMagic   = "CARDMRG2"
	stateMagicV1 = "CARDMRG1" // keys and last timestamps only; still read
)

// Bounds on what a state file may claim, so that a corrupt one cannot make
// LoadState allocate without limit.
const (
	maxStateLabels    = 1 << 16
	maxStateHistogram = 1 << 20
	maxStateInputs    = 1 << 24
)

// Header flags of the state file.
const (
	// stateClean: saved by a process that flushed and stopped, so that it
	// holds exactly what the process last emitted.
	stateClean = 1 << iota
)

// SaveState writes the merged outputs to path atomically (temporary file,
// fsync, rename), as a clean state: call it when nothing is absorbed any
// more (at shutdown). Run saves every minute too, marking those saves as
// what a crash may leave behind.
func (m *Merger) SaveState(path string) error { return m.saveStateFile(path, true) }

func (m *Merger) saveStateFile(path string, clean bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("cannot create merge state file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	w := bufio.NewWriterSize(f, 1<<20)
	n, err := m.writeState(w, clean)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cannot write merge state file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("cannot replace merge state file: %w", err)
	}
	m.logger.Debug("merge state saved", "file", path, "outputs", n)
	return nil
}

func (m *Merger) writeState(w io.Writer, clean bool) (int, error) {
	var header uint64
	if clean {
		header |= stateClean
	}
	if _, err := w.Write(binary.AppendUvarint([]byte(stateMagic), header)); err != nil {
		return 0, err
	}
	n := 0
	var buf []byte
	for i := range m.shards {
		sh := &m.shards[i]
		// Encode under the lock, write after it: a slow disk must not hold
		// the shard's requests.
		buf = buf[:0]
		sh.mu.Lock()
		sh.outputs.each(func(key uint64, o *output) {
			if o.m != nil {
				buf = appendOutput(buf, key, o)
				n++
			}
		})
		sh.mu.Unlock()
		if _, err := w.Write(buf); err != nil {
			return n, err
		}
	}
	return n, nil
}

// appendOutput encodes one merged output:
//
//	key u64 (fixed), floor ts, last counter value, data ts, base, base
//	histogram, labels, live inputs, retired inputs
func appendOutput(b []byte, key uint64, o *output) []byte {
	mg := o.m
	b = binary.LittleEndian.AppendUint64(b, key)
	var flags uint64
	if mg.everQueued {
		flags |= outputEmitted
	}
	if mg.ended {
		flags |= outputEnded
	}
	b = binary.AppendUvarint(b, flags)
	b = binary.AppendVarint(b, max(mg.lastTs, o.passTs))
	b = appendFloat(b, mg.lastV)
	b = binary.AppendVarint(b, mg.dataTs)
	b = appendFloat(b, mg.base)
	b = appendHistogram(b, mg.baseHist)
	b = appendBytes(b, mg.enc)
	b = binary.AppendUvarint(b, uint64(mg.inputs.len()))
	for i := range mg.inputs.len() {
		ip := mg.inputs.at(i)
		b = binary.LittleEndian.AppendUint64(b, ip.key)
		b = binary.AppendVarint(b, ip.seen)
		b = appendInputState(b, ip.ts, ip.val, ip.offset, ip.has, ip.stale, mg.hist(ip))
	}
	b = binary.AppendUvarint(b, uint64(len(mg.retired)))
	for h, r := range mg.retired {
		b = binary.LittleEndian.AppendUint64(b, h)
		b = binary.AppendVarint(b, r.at)
		b = appendInputState(b, r.ts, r.val, r.offset, r.has, false, r.h)
	}
	return b
}

// Flags of an output record.
const (
	outputEmitted = 1 << iota // a point was queued: it needs a stale marker when it ends
	outputEnded               // its last point is a stale marker
)

const (
	flagHas = 1 << iota
	flagStale
	flagHistStale
)

func appendInputState(b []byte, ts int64, val, offset float64, has, stale bool, h *histInput) []byte {
	var histTs int64
	var hist, histOffset *histogram.FloatHistogram
	histStale := false
	if h != nil {
		histTs, hist, histOffset, histStale = h.ts, h.hist, h.offset, h.stale
	}
	var flags uint64
	if has {
		flags |= flagHas
	}
	if stale {
		flags |= flagStale
	}
	if histStale {
		flags |= flagHistStale
	}
	b = binary.AppendUvarint(b, flags)
	b = binary.AppendVarint(b, ts)
	b = appendFloat(b, val)
	b = appendFloat(b, offset)
	b = binary.AppendVarint(b, histTs)
	b = appendHistogram(b, hist)
	return appendHistogram(b, histOffset)
}

func appendFloat(b []byte, v float64) []byte { return binary.AppendUvarint(b, math.Float64bits(v)) }

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// appendHistogram encodes h as a prometheus.Histogram message (empty: none).
func appendHistogram(b []byte, h *histogram.FloatHistogram) []byte {
	if h == nil {
		return binary.AppendUvarint(b, 0)
	}
	ph := prompb.FromFloatHistogram(0, h)
	data, err := ph.Marshal()
	if err != nil {
		return binary.AppendUvarint(b, 0)
	}
	return appendBytes(b, data)
}

// stateReader decodes a state file; the first error sticks.
type stateReader struct {
	r   *bufio.Reader
	err error
}

func (s *stateReader) fail(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf(format, args...)
	}
}

func (s *stateReader) u64() uint64 {
	if s.err != nil {
		return 0
	}
	var b [8]byte
	if _, err := io.ReadFull(s.r, b[:]); err != nil {
		s.err = err
		return 0
	}
	return binary.LittleEndian.Uint64(b[:])
}

func (s *stateReader) uvarint() uint64 {
	if s.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(s.r)
	if err != nil {
		s.err = err
	}
	return v
}

func (s *stateReader) varint() int64 {
	if s.err != nil {
		return 0
	}
	v, err := binary.ReadVarint(s.r)
	if err != nil {
		s.err = err
	}
	return v
}

func (s *stateReader) float() float64 { return math.Float64frombits(s.uvarint()) }

func (s *stateReader) bytes(limit int) []byte {
	n := s.uvarint()
	if s.err != nil {
		return nil
	}
	if n > uint64(limit) {
		s.fail("a field of %d bytes (at most %d)", n, limit)
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(s.r, b); err != nil {
		s.err = err
	}
	return b
}

// histogram reads a histogram written by appendHistogram; it must be one
// Prometheus accepts.
func (s *stateReader) histogram() *histogram.FloatHistogram {
	data := s.bytes(maxStateHistogram)
	if s.err != nil || len(data) == 0 {
		return nil
	}
	if err := wire.ValidateHistogram(data); err != nil {
		s.fail("%s", err)
		return nil
	}
	fh := &histogram.FloatHistogram{}
	if err := wire.DecodeFloatHistogram(data, fh); err != nil {
		s.fail("%s", err)
		return nil
	}
	if !mergeableZeroThreshold(fh) {
		s.fail("%s", errNaNZeroThreshold)
		return nil
	}
	return fh
}

// input reads what appendInputState wrote into ip, and returns its native
// histogram state (nil for none).
func (s *stateReader) input(ip *input) *histInput {
	flags := s.uvarint()
	ip.has, ip.stale = flags&flagHas != 0, flags&flagStale != 0
	ip.ts = s.varint()
	ip.val = s.float()
	ip.offset = s.float()
	h := histInput{ts: s.varint(), hist: s.histogram(), offset: s.histogram(), stale: flags&flagHistStale != 0}
	if h == (histInput{}) {
		return nil
	}
	return &h
}

// LoadState restores the merged outputs saved by SaveState. A missing file
// means a first start. Outputs none of whose inputs sent within
// ForgetAfter are skipped. Call it before the first request.
func (m *Merger) LoadState(path string) (int, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("cannot open merge state file: %w", err)
	}
	defer f.Close()
	return m.readState(path, bufio.NewReaderSize(f, 1<<20))
}

// readState restores the merged outputs from r; path names it in errors.
func (m *Merger) readState(path string, r *bufio.Reader) (int, error) {
	magic := make([]byte, len(stateMagic))
	if _, err := io.ReadFull(r, magic); err != nil {
		return 0, fmt.Errorf("merge state file %s: not a Cardinal merge state file", path)
	}
	switch string(magic) {
	case stateMagic:
		s := &stateReader{r: r}
		header := s.uvarint()
		if s.err != nil {
			return 0, fmt.Errorf("merge state file %s: truncated: %w", path, s.err)
		}
		return m.loadV2(path, s, header&stateClean != 0)
	case stateMagicV1:
		return m.loadV1(path, r)
	}
	return 0, fmt.Errorf("merge state file %s: not a Cardinal merge state file", path)
}

// A state saved by a process that crashed is up to a minute old: the
// process went on absorbing and emitting after it. Its emitted timestamps
// are at most the wall clock of the crash, so restored outputs emit only
// after the restart's time; and its inputs' saved values may be behind what
// it emitted, so restored inputs are pending until they report again (their
// next samples carry their cumulative values) or restoreGrace passes, lest
// a partial sum make the counter go down.
func restoreGrace(r *Rules) time.Duration { return max(2*r.FlushInterval, 2*time.Minute) }

func (m *Merger) loadV2(path string, s *stateReader, clean bool) (int, error) {
	rules := m.rules.Load()
	nowMs := m.now().UnixMilli()
	oldest := nowMs - rules.ForgetAfter.Milliseconds()
	n := 0
	for {
		if _, err := s.r.Peek(1); err == io.EOF {
			m.metrics.trackedInputs.Set(float64(m.tracked.Load()))
			m.metrics.retiredInputs.Set(float64(m.retired.Load()))
			return n, nil
		}
		key := s.u64()
		flags := s.uvarint()
		floor := s.varint()
		mg := &merged{lastTs: floor,
			everQueued: flags&outputEmitted != 0, ended: flags&outputEnded != 0}
		mg.lastV = s.float()
		mg.dataTs = s.varint()
		mg.base = s.float()
		mg.baseHist = s.histogram()
		enc := s.bytes(maxStateLabels)
		// newest is wall-clock time: the inputs' last samples' arrival.
		newest := int64(math.MinInt64)
		nIn := s.uvarint()
		if nIn > maxStateInputs {
			s.fail("%d inputs in one output", nIn)
		}
		for i := uint64(0); i < nIn && s.err == nil; i++ {
			ip := input{key: s.u64(), seen: s.varint()}
			h := s.input(&ip)
			live := mg.inputs.get(ip.key)
			if live != nil {
				mg.setHist(live, nil)
				*live = ip // a file written by hand may repeat one
			} else {
				live = mg.addInput(ip)
			}
			mg.setHist(live, h)
			newest = max(newest, ip.seen)
		}
		nRet := s.uvarint()
		if nRet > maxStateInputs {
			s.fail("%d retired inputs in one output", nRet)
		}
		for i := uint64(0); i < nRet && s.err == nil; i++ {
			h := s.u64()
			at := s.varint()
			var ip input
			hs := s.input(&ip)
			if mg.retired == nil {
				mg.retired = map[uint64]*retiredInput{}
			}
			if hs != nil {
				hs.stale = false
			}
			mg.retired[h] = &retiredInput{at: at, ts: ip.ts, val: ip.val, offset: ip.offset, has: ip.has, h: hs}
			newest = max(newest, at)
		}
		if s.err != nil {
			return n, fmt.Errorf("merge state file %s: output %d: %w", path, n, s.err)
		}
		if newest < oldest && newest != math.MinInt64 {
			continue
		}
		if newest == math.MinInt64 {
			newest = nowMs // no input: live for a staleness period
		}
		if len(enc) > 0 {
			ls, err := wire.DecodeLabels(enc)
			if err != nil || wire.GetLabel(ls, "__name__") == nil {
				return n, fmt.Errorf("merge state file %s: output %d: bad labels", path, n)
			}
			mg.learn(m, ls)
		}
		if !clean {
			mg.lastTs = max(mg.lastTs, nowMs)
			for i := range mg.inputs.len() {
				ip := mg.inputs.at(i)
				ip.pending = true
			}
			mg.pendingUntil = nowMs + restoreGrace(rules).Milliseconds()
		}
		if m.restore(key, mg, newest) {
			n++
		}
	}
}

// restore installs a merged output read from the state file, unless one is
// there already, and accounts for its inputs. seen is the wall-clock time
// of its inputs' last sample.
func (m *Merger) restore(key uint64, mg *merged, seen int64) bool {
	sh := &m.shards[key%numShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.outputs.get(key) != nil {
		return false
	}
	sh.outputs.put(key, &output{seen: seen, m: mg})
	m.metrics.mergedSeries.Inc()
	m.merged.Add(1)
	m.tracked.Add(int64(mg.inputs.len()))
	m.metrics.mergeInputs.Add(float64(mg.inputs.len()))
	m.retired.Add(int64(len(mg.retired)))
	return true
}

// loadV1 reads a state file of the first format: keys and last timestamps.
// Entries older than the staleness period are skipped.
func (m *Merger) loadV1(path string, r *bufio.Reader) (int, error) {
	nowMs := m.now().UnixMilli()
	oldest := nowMs - m.rules.Load().Staleness.Milliseconds()
	var buf [16]byte
	n := 0
	for {
		if _, err := io.ReadFull(r, buf[:]); err == io.EOF {
			return n, nil
		} else if err != nil {
			return n, fmt.Errorf("merge state file %s: truncated: %w", path, err)
		}
		key := binary.LittleEndian.Uint64(buf[:8])
		lastEmit := int64(binary.LittleEndian.Uint64(buf[8:]))
		if lastEmit < oldest {
			continue
		}
		sh := &m.shards[key%numShards]
		sh.mu.Lock()
		if sh.outputs.get(key) == nil {
			// seen is now: the output lives for a staleness period even if
			// no input comes back.
			sh.outputs.put(key, &output{seen: nowMs, m: m.newMerged(nil, lastEmit)})
			n++
		}
		sh.mu.Unlock()
	}
}
