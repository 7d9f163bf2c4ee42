// Package merge keeps label dropping from corrupting data: when relabeling
// makes several input series identical, it merges them into one correct
// output series instead of forwarding duplicates that a TSDB rejects.
//
// # Detection
//
// Every series is identified twice, by the hash of its labels before
// relabeling (the input) and after (the output), both xxhash with 0xff
// separators. The Merger remembers, per output, the input that feeds it.
// An output fed by one input passes through unchanged, synchronously, with
// its original timestamps; that path allocates nothing once the output is
// known. When a second input appears, the output becomes merged, for good
// (until all its inputs have gone stale and the output is forgotten).
//
// # Merging
//
//   - Counters (names ending in _total, _count, _sum or _bucket, or typed
//     counter, histogram or summary by remote-write metadata, or by the
//     config): the output is the sum of its inputs' cumulative values. A
//     reset of one input (its value went down) adds that input's last value
//     to its offset, so the output never decreases. An input that
//     disappears keeps contributing its last value. A new input counts from
//     zero: its whole value is new to the output.
//   - Gauges: a policy per metric pattern, sum (default), max, min or last,
//     over the inputs with a sample within the staleness period.
//   - Native histograms: summed with Prometheus' FloatHistogram arithmetic,
//     with the same per-input reset handling as counters (gauge histograms
//     are summed over fresh inputs).
//   - Exemplars of the inputs attach to the output, at most one per
//     emission.
//
// # Emission
//
// Merged outputs are emitted by one goroutine (Run) every flush interval,
// in one request at a time, with the flush's wall-clock time as timestamp.
// That is what makes the downstream accept them: the inputs of one output
// arrive in different, concurrent requests (Prometheus shards by the
// original labels), and only a single serialized writer can promise that a
// series never receives two values for one timestamp nor goes back in time.
// A flush timestamp is always later than anything already sent for that
// output, and a newly merged output is first emitted only after every
// request that may still carry a pass-through sample of it has finished.
//
// Consequences, documented for users:
//   - Delay: a merged output shows up downstream up to one flush interval
//     after its samples arrived, with the flush's timestamp, not the
//     scrape's. Pass-through outputs have no delay.
//   - No-loss guarantee: the sender is acknowledged for merged samples once
//     they are absorbed in memory, not after the downstream accepted them.
//     A failed flush is retried until the next one supersedes it; since a
//     merged counter carries its whole cumulative value, a lost emission is
//     a gap in resolution, not lost increments. A crash loses the in-memory
//     state: after a restart merged counters restart from the sum of their
//     inputs' current values, which rate() sees as at most one counter
//     reset (inputs that had disappeared before the restart no longer
//     contribute).
//   - Memory: per-input state expires after the staleness period (its
//     contribution moves into the output's base); the number of tracked
//     inputs is capped by MaxInputs.
package merge
