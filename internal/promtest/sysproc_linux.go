package promtest

import "syscall"

// sysProcAttr makes the kernel kill Prometheus when the test binary dies
// (for example on a -timeout panic, which skips t.Cleanup), so no orphan
// keeps a port or a data directory.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
