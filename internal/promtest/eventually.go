package promtest

import (
	"testing"
	"time"
)

// PollInterval is how often Eventually evaluates its condition.
const PollInterval = 250 * time.Millisecond

// Eventually calls cond at once and then every PollInterval until it returns
// true. If timeout passes first it fails the test with the message of the
// last call, which should say what was seen ("got 3 series, want 1").
// It must be called from the test goroutine.
func Eventually(t testing.TB, timeout time.Duration, cond func() (ok bool, msg string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if !time.Now().Before(deadline) {
			t.Fatalf("condition not met within %s: %s", timeout, msg)
		}
		<-tick.C
	}
}
