package load

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	f := func(stat string, want time.Duration) {
		t.Helper()
		got, err := parseStatCPU(stat)
		if err != nil {
			t.Fatalf("parseStatCPU(%q): %v", stat, err)
		}
		if got != want {
			t.Fatalf("parseStatCPU(%q) = %v, want %v", stat, got, want)
		}
	}
	// utime 250 + stime 50 ticks = 3 s.
	f("1234 (cardinal) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 0 0", 3*time.Second)
	// A command name with spaces and parentheses must not shift the fields.
	f("7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 1 0 0", 100*time.Millisecond)
	f("7 (x) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0", 0)

	bad := func(stat, wantErr string) {
		t.Helper()
		_, err := parseStatCPU(stat)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("parseStatCPU(%q) error %v, want one containing %q", stat, err, wantErr)
		}
	}
	bad("1234 cardinal S 1", "no ')'")
	bad("1234 (cardinal) S 1 2 3", "fields after the command name")
	bad("1 (x) R 1 7 7 0 -1 0 0 0 0 0 -5 3 0", "cpu time")
}

func TestParseStatusMem(t *testing.T) {
	f := func(status string, want ProcMem) {
		t.Helper()
		got, err := parseStatusMem(status)
		if err != nil {
			t.Fatalf("parseStatusMem: %v", err)
		}
		if got != want {
			t.Fatalf("parseStatusMem = %+v, want %+v", got, want)
		}
	}
	f("Name:\tcardinal\nVmPeak:\t  900 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\nThreads:\t9\n", ProcMem{RSS: 1 << 20, Peak: 2 << 20})
	f("VmRSS: 1 kB\nVmHWM: 1 kB", ProcMem{RSS: 1024, Peak: 1024})

	bad := func(status, wantErr string) {
		t.Helper()
		_, err := parseStatusMem(status)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("parseStatusMem(%q) error %v, want one containing %q", status, err, wantErr)
		}
	}
	bad("Name:\tkthreadd\nState:\tS\n", "missing")
	bad("VmRSS:\t12 MB\nVmHWM:\t12 kB\n", "not a size in kB")
	bad("VmRSS:\tx kB\nVmHWM:\t12 kB\n", "VmRSS")
}

// TestProcOnSelf reads the test process itself: CPU time grows while it
// spins, and the peak resident size is at least the current one and grows
// when the process touches fresh memory.
func TestProcOnSelf(t *testing.T) {
	pid := os.Getpid()
	cpu0, err := ProcCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Spin for 100 ms of wall time; bounded even on a busy machine.
	x := 0
	for start := time.Now(); time.Since(start) < 100*time.Millisecond; {
		for i := range 1000 {
			x += i
		}
	}
	_ = x
	var cpu1 time.Duration
	for range 50 { // CPU time advances in 10 ms ticks; allow the accounting to catch up
		if cpu1, err = ProcCPU(pid); err != nil {
			t.Fatal(err)
		}
		if cpu1 > cpu0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if cpu1 <= cpu0 {
		t.Fatalf("cpu time did not grow while spinning: %v then %v", cpu0, cpu1)
	}

	m0, err := ProcMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	if m0.RSS <= 0 || m0.Peak < m0.RSS {
		t.Fatalf("implausible memory %+v", m0)
	}
	buf := make([]byte, 64<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	m1, err := ProcMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	if m1.Peak < m0.RSS+32<<20 {
		t.Fatalf("peak %d MiB did not grow by the 64 MiB touched (rss before %d MiB)", m1.Peak>>20, m0.RSS>>20)
	}
	_ = buf[len(buf)-1]
}

func TestProcMissing(t *testing.T) {
	if _, err := ProcCPU(1 << 30); err == nil {
		t.Fatal("ProcCPU of a pid that cannot exist: no error")
	}
	if _, err := ProcMemory(1 << 30); err == nil {
		t.Fatal("ProcMemory of a pid that cannot exist: no error")
	}
}
