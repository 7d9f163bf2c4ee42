package reliability

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cardinal-gateway/cardinal/bench/load"
)

// slowBodyConns and announced are the slow-body attack: connections that
// announce a body just under the compressed limit (39 MB; the 32 MiB
// default max_request_bytes allows 39.1 MB) and send 12 bytes of it.
const (
	slowBodyConns = 32
	announced     = 39_000_000
	sentBytes     = 12
)

// slowConn is what one slow-body connection saw.
type slowConn struct {
	status int           // 0: no answer
	after  time.Duration // from the last byte sent to the answer
	closed bool          // the server closed the connection after answering
	err    error
}

// attackSlowBody opens one connection, sends the headers of a write
// request announcing a 39 MB body and 12 bytes of it, then waits (at most
// wait) for the answer and for the server to close the connection.
func attackSlowBody(addr string, wait time.Duration) slowConn {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return slowConn{err: err}
	}
	defer conn.Close()
	head := fmt.Sprintf("POST /api/v1/write HTTP/1.1\r\nHost: %s\r\nContent-Encoding: snappy\r\nContent-Type: application/x-protobuf\r\n"+
		"X-Prometheus-Remote-Write-Version: 0.1.0\r\nContent-Length: %d\r\n\r\n", addr, announced)
	if _, err := io.WriteString(conn, head+strings.Repeat("\x00", sentBytes)); err != nil {
		return slowConn{err: err}
	}
	sent := time.Now()
	_ = conn.SetReadDeadline(sent.Add(wait))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return slowConn{err: err, after: time.Since(sent)}
	}
	r := slowConn{status: resp.StatusCode, after: time.Since(sent)}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	// Closed: the next read ends (EOF or reset) well before the deadline.
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = br.ReadByte()
	r.closed = err != nil && !isTimeout(err)
	return r
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// legitDuring runs 4 closed-loop legitimate senders until ctx ends.
func legitDuring(ctx context.Context, url string, w *workload, d time.Duration) *loadStats {
	return closedLoop(ctx, url, w, 4, d, time.Second)
}

// TestSlowBodies (issue 11, item 8): 32 connections announce a 39 MB body
// and send 12 bytes; after 5s, while they are still held, 4 legitimate
// senders write for 11s. Cardinal must not allocate what is announced (its
// VmHWM stays flat while the slow bodies are alone), must answer every slow
// connection (408 once body_stall_timeout passes, or 503 when the admission
// bounds are full) and close it, and must go on serving legitimate writes.
// Run with receive.memory_limit 512 MiB (bytes in flight bounded) and
// without a memory limit.
func TestSlowBodies(t *testing.T) {
	requireFull(t)
	w := newWorkload(t, overloadMesh, 4, 2000)
	var rows []string
	for _, tc := range []struct {
		name  string
		limit int64
	}{
		{"memory_limit 512MiB", memoryLimit},
		{"no memory limit", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			down := newSink(t, 20*time.Millisecond)
			c := startCardinal(t, loadCardinalConfig(down.URL(), tc.limit, ""))
			url := c.URL + "/api/v1/write"
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			before := legitDuring(ctx, url, w, 4*time.Second)
			time.Sleep(time.Second)
			mem0, err := load.ProcMemory(c.pid())
			if err != nil {
				t.Fatal(err)
			}
			rs := &resourceSampler{c: c}
			sctx, stopSampling := context.WithCancel(ctx)
			go rs.run(sctx, 200*time.Millisecond)

			const wait = 25 * time.Second
			results := make([]slowConn, slowBodyConns)
			var wg sync.WaitGroup
			attackStart := time.Now()
			for i := range results {
				wg.Go(func() { results[i] = attackSlowBody(c.addr, wait) })
			}
			// First the slow bodies alone, for what they cost in memory;
			// then legitimate senders while they are still held
			// (body_stall_timeout is 15s).
			time.Sleep(5 * time.Second)
			quiet, err := load.ProcMemory(c.pid())
			if err != nil {
				t.Fatal(err)
			}
			during := legitDuring(ctx, url, w, 11*time.Second)
			wg.Wait()
			attack := time.Since(attackStart)
			stopSampling()
			rs.once()
			res := rs.reset()

			statuses := map[string]int{}
			closed := 0
			var slowest time.Duration
			for _, r := range results {
				switch {
				case r.err != nil:
					statuses["no answer: "+r.err.Error()]++
				default:
					statuses[fmt.Sprintf("%d", r.status)]++
					slowest = max(slowest, r.after)
				}
				if r.closed {
					closed++
				}
			}
			b50, b99 := before.percentiles()
			d50, d99 := during.percentiles()
			t.Logf("%d slow bodies: answers {%s}, the last after %s, %d connections closed by cardinal; attack lasted %s",
				slowBodyConns, answersString(statuses), slowest.Round(time.Millisecond), closed, attack.Round(time.Millisecond))
			t.Logf("RSS before %s MiB, with the slow bodies alone (5s) %s MiB (VmHWM %s → %s MiB), max with legitimate writes too %s MiB, VmHWM %s MiB; heap in use max %s MiB, bytes reserved max %s MiB, goroutines max %.0f",
				mib(mem0.RSS), mib(quiet.RSS), mib(mem0.Peak), mib(quiet.Peak), mib(res.maxRSS), mib(res.hwm), mib(int64(res.heap)), mib(int64(res.heldBytes)), res.goroutines)
			t.Logf("legitimate writes before: {%s} p50 %s p99 %s; during: {%s} p50 %s p99 %s; shed because of {%s}",
				answersString(before.statuses), b50.Round(time.Millisecond), b99.Round(time.Millisecond),
				answersString(during.statuses), d50.Round(time.Millisecond), d99.Round(time.Millisecond), answersString(during.shedWhy))
			rows = append(rows, fmt.Sprintf("| %s | %s | %s | %d/%d | %s / %s / %s | %s | %s | %s / %s | %s | %s / %s |",
				tc.name, answersString(statuses), slowest.Round(100*time.Millisecond), closed, slowBodyConns,
				mib(mem0.RSS), mib(quiet.RSS), mib(res.hwm), mib(quiet.Peak-mem0.Peak), mib(int64(res.heldBytes)),
				answersString(before.statuses), b99.Round(time.Millisecond), answersString(during.statuses),
				d50.Round(time.Millisecond), d99.Round(time.Millisecond)))

			for _, r := range results {
				if r.err != nil || (r.status != http.StatusRequestTimeout && r.status != http.StatusServiceUnavailable) {
					t.Errorf("a slow body got %d %v, want 408 or 503", r.status, r.err)
					break
				}
			}
			if closed != slowBodyConns {
				t.Errorf("%d of %d slow connections closed by cardinal after the answer", closed, slowBodyConns)
			}
			// 32 × 39 MB would be 1.2 GB, one of them 37 MiB: the buffers
			// must grow only with what arrives.
			if grown := quiet.Peak - mem0.Peak; grown > 16<<20 {
				t.Errorf("VmHWM grew by %s MiB with the slow bodies alone", mib(grown))
			}
			if during.statuses["204"] == 0 {
				t.Errorf("no legitimate write served while the slow bodies were held: %v", during.statuses)
			}
			if err := c.stop(syscall.SIGTERM); err != nil {
				t.Errorf("cardinal did not exit 0: %v", err)
			}
		})
	}
	t.Logf("figures:\n| config | slow bodies answered | last answer after | closed | RSS before / slow bodies alone / VmHWM (MiB) | VmHWM growth, slow bodies alone (MiB) | max bytes reserved (MiB) | legit before (p99) | legit during | p50 / p99 |\n|---|---|---|---|---|---|---|---|---|---|\n%s",
		strings.Join(rows, "\n"))
}

// slowlorisConns is the size of the slowloris attack.
const slowlorisConns = 2000

// TestSlowloris (issue 11, item 8): 2,000 connections trickle request
// headers (one line a second) while 4 legitimate senders write. Cardinal
// must cut every one of them at receive.header_timeout (10s) and serve the
// legitimate writes meanwhile; the latency figures are reported.
func TestSlowloris(t *testing.T) {
	requireFull(t)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < slowlorisConns+1024 {
		t.Skipf("file descriptor limit %d too low for %d connections (want %d): raise ulimit -n", lim.Cur, slowlorisConns, slowlorisConns+1024)
	}
	w := newWorkload(t, overloadMesh, 4, 2000)
	down := newSink(t, 20*time.Millisecond)
	c := startCardinal(t, loadCardinalConfig(down.URL(), memoryLimit, ""))
	url := c.URL + "/api/v1/write"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	before := legitDuring(ctx, url, w, 4*time.Second)
	mem0, err := load.ProcMemory(c.pid())
	if err != nil {
		t.Fatal(err)
	}
	rs := &resourceSampler{c: c}
	sctx, stopSampling := context.WithCancel(ctx)
	go rs.run(sctx, 250*time.Millisecond)

	const bound = 20 * time.Second
	closedAfter := make([]time.Duration, slowlorisConns) // 0: not closed within bound
	dialErrs := make([]error, slowlorisConns)
	var wg sync.WaitGroup
	start := time.Now()
	sem := make(chan struct{}, 200) // dials in flight
	for i := range slowlorisConns {
		sem <- struct{}{}
		wg.Go(func() {
			conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
			<-sem
			if err != nil {
				dialErrs[i] = err
				return
			}
			defer conn.Close()
			opened := time.Now()
			gone := make(chan struct{})
			go func() {
				defer close(gone)
				_ = conn.SetReadDeadline(opened.Add(bound))
				var b [512]byte
				for {
					if _, err := conn.Read(b[:]); err != nil {
						if !isTimeout(err) {
							closedAfter[i] = time.Since(opened)
						}
						return
					}
				}
			}()
			if _, err := io.WriteString(conn, "POST /api/v1/write HTTP/1.1\r\nHost: "+c.addr+"\r\n"); err != nil {
				return
			}
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-gone:
					return
				case <-tick.C:
				}
				if _, err := fmt.Fprintf(conn, "X-Slow-%d: a\r\n", n); err != nil {
					<-gone
					return
				}
			}
		})
	}
	opened := time.Since(start)
	during := legitDuring(ctx, url, w, 12*time.Second)
	wg.Wait()
	stopSampling()
	rs.once()
	res := rs.reset()

	var dialFailed, cut int
	var lat []time.Duration
	for i := range closedAfter {
		switch {
		case dialErrs[i] != nil:
			dialFailed++
		case closedAfter[i] > 0:
			cut++
			lat = append(lat, closedAfter[i])
		}
	}
	sortDurations(lat)
	b50, b99 := before.percentiles()
	d50, d99 := during.percentiles()
	t.Logf("%d slowloris connections opened in %s (%d dials failed); %d cut by cardinal, after p50 %s, max %s",
		slowlorisConns, opened.Round(time.Millisecond), dialFailed, cut, percentile(lat, 0.5).Round(time.Millisecond), percentile(lat, 1).Round(time.Millisecond))
	t.Logf("RSS before %s MiB, max during %s MiB, VmHWM %s MiB, goroutines max %.0f", mib(mem0.RSS), mib(res.maxRSS), mib(res.hwm), res.goroutines)
	t.Logf("legitimate writes before: {%s} p50 %s p99 %s; during: {%s} p50 %s p99 %s",
		answersString(before.statuses), b50.Round(time.Millisecond), b99.Round(time.Millisecond),
		answersString(during.statuses), d50.Round(time.Millisecond), d99.Round(time.Millisecond))
	t.Logf("figures:\n| slowloris connections | cut by cardinal | cut after p50 / max | RSS before / max / VmHWM (MiB) | max goroutines | legit before p50 / p99 | legit during | p50 / p99 |\n|---|---|---|---|---|---|---|---|\n| %d | %d | %s / %s | %s / %s / %s | %.0f | %s / %s | %s | %s / %s |",
		slowlorisConns, cut, percentile(lat, 0.5).Round(100*time.Millisecond), percentile(lat, 1).Round(100*time.Millisecond),
		mib(mem0.RSS), mib(res.maxRSS), mib(res.hwm), res.goroutines, b50.Round(time.Millisecond), b99.Round(time.Millisecond),
		answersString(during.statuses), d50.Round(time.Millisecond), d99.Round(time.Millisecond))

	if dialFailed > 0 {
		t.Errorf("%d of %d connections could not be opened", dialFailed, slowlorisConns)
	}
	if cut != slowlorisConns-dialFailed {
		t.Errorf("%d of %d slowloris connections cut within %s, want all (header_timeout 10s)", cut, slowlorisConns-dialFailed, bound)
	}
	for code, n := range during.statuses {
		if code != "204" {
			t.Errorf("legitimate writes during the slowloris: %d answered %s, want 204", n, code)
		}
	}
	if res.hwm >= memoryLimit {
		t.Errorf("VmHWM %s MiB, want under %s MiB", mib(res.hwm), mib(memoryLimit))
	}
	if err := c.stop(syscall.SIGTERM); err != nil {
		t.Errorf("cardinal did not exit 0: %v", err)
	}
}
