package merge

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// The state file remembers, across restarts, which outputs were merged and
// the last timestamp emitted for each. Without it a restarted Cardinal would
// pass the first input of such an output through with the sender's
// timestamp, which can be older than the merged sample the previous process
// emitted: the downstream rejects that as out of order, and with it the
// sender's whole request. The values are not kept: after a restart merged
// counters start again from their inputs' current values, which rate()
// handles as a reset.
const stateMagic = "CARDMRG1"

// SaveState writes the merged outputs to path atomically (temporary file,
// fsync, rename).
func (m *Merger) SaveState(path string) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("cannot create merge state file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	w := bufio.NewWriter(f)
	n, err := m.writeState(w)
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

func (m *Merger) writeState(w io.Writer) (int, error) {
	var buf [16]byte
	if _, err := io.WriteString(w, stateMagic); err != nil {
		return 0, err
	}
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		for key, o := range sh.outputs {
			if o.m == nil {
				continue
			}
			binary.LittleEndian.PutUint64(buf[:8], key)
			binary.LittleEndian.PutUint64(buf[8:], uint64(max(o.m.lastTs, o.passTs)))
			if _, err := w.Write(buf[:]); err != nil {
				sh.mu.Unlock()
				return n, err
			}
			n++
		}
		sh.mu.Unlock()
	}
	return n, nil
}

// LoadState restores the merged outputs saved by SaveState. A missing file
// means a first start. Entries older than the staleness period are skipped.
// Call it before the first request.
func (m *Merger) LoadState(path string) (int, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("cannot open merge state file: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	magic := make([]byte, len(stateMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != stateMagic {
		return 0, fmt.Errorf("merge state file %s: not a Cardinal merge state file", path)
	}
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
		if sh.outputs[key] == nil {
			// seen is now: the output lives for a staleness period even if
			// no input comes back.
			sh.outputs[key] = &output{seen: nowMs, m: m.newMerged(nil, lastEmit)}
			n++
		}
		sh.mu.Unlock()
	}
}
