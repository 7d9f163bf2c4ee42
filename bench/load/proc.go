package load

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is sysconf(_SC_CLK_TCK), the unit of the CPU times in
// /proc/<pid>/stat. It is 100 on every Linux architecture Go supports (the
// kernel's USER_HZ), so it is a constant rather than a cgo call.
const clockTicks = 100

// ProcCPU returns the user plus system CPU time the process pid has used,
// from /proc/<pid>/stat.
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime and stime (fields 14 and 15) from the text of
// /proc/<pid>/stat. The command name (field 2) is in parentheses and may hold
// spaces and parentheses itself, so fields are counted after the last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("cannot parse /proc stat: no ')' after the command name")
	}
	// After the command: state (field 3) is rest[0], so field n is rest[n-3].
	rest := strings.Fields(stat[i+1:])
	if len(rest) < 13 {
		return 0, fmt.Errorf("cannot parse /proc stat: %d fields after the command name, want at least 13", len(rest))
	}
	var ticks uint64
	for _, f := range rest[11:13] {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cannot parse /proc stat cpu time %q: %w", f, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// ProcMem is a process's resident memory in bytes.
type ProcMem struct {
	RSS  int64 // VmRSS: resident now
	Peak int64 // VmHWM: the peak resident size since the process started
}

// ProcMemory returns the resident memory of pid from /proc/<pid>/status.
func ProcMemory(pid int) (ProcMem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcMem{}, err
	}
	return parseStatusMem(string(b))
}

// parseStatusMem reads VmRSS and VmHWM ("VmHWM:   12345 kB") from the text
// of /proc/<pid>/status.
func parseStatusMem(status string) (ProcMem, error) {
	var m ProcMem
	var haveRSS, haveHWM bool
	for line := range strings.Lines(status) {
		name, val, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return ProcMem{}, fmt.Errorf("cannot parse /proc status %s: %q is not a size in kB", name, strings.TrimSpace(val))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return ProcMem{}, fmt.Errorf("cannot parse /proc status %s: %w", name, err)
		}
		if name == "VmRSS" {
			m.RSS, haveRSS = kb<<10, true
		} else {
			m.Peak, haveHWM = kb<<10, true
		}
	}
	if !haveRSS || !haveHWM {
		return ProcMem{}, fmt.Errorf("cannot parse /proc status: VmRSS or VmHWM missing (a kernel thread or a zombie?)")
	}
	return m, nil
}
