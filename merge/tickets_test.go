package merge

import (
	"sync"
	"sync/atomic"
	"testing"
)

// oldestActive must never pass a ticket still in flight, whatever the
// interleaving, slots exhausted (overflow) included.
func TestTicketsOldestActive(t *testing.T) {
	m, _, _ := newTestMerger(t, Rules{})
	const workers, rounds = 8, 2000
	var live [workers]atomic.Uint64 // each worker's ticket in flight, 0 when none
	held := make([]Ticket, 0, ticketSlots+10)
	for range ticketSlots + 10 {
		held = append(held, m.Begin()) // fill every slot, and some overflow
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			for range rounds {
				tk := m.Begin()
				live[w].Store(tk.seq)
				live[w].Store(0)
				m.End(tk)
			}
		})
	}
	go func() {
		wg.Wait()
		close(stop)
	}()
	check := func() {
		// Read the live tickets before asking: any ticket live then and
		// still live after the call must not be below the answer.
		var before [workers]uint64
		for w := range live {
			before[w] = live[w].Load()
		}
		oldest := m.tickets.oldestActive()
		for w := range live {
			if b := before[w]; b != 0 && live[w].Load() == b && oldest > b {
				t.Errorf("oldestActive %d passes ticket %d in flight", oldest, b)
			}
		}
		if oldest > held[0].seq {
			t.Errorf("oldestActive %d passes held ticket %d", oldest, held[0].seq)
		}
	}
	for done := false; !done; {
		select {
		case <-stop:
			done = true
		default:
			check()
		}
	}
	for i := len(held) - 1; i >= 0; i-- {
		m.End(held[i])
	}
	if got, want := m.tickets.oldestActive(), m.tickets.issued()+1; got != want {
		t.Errorf("no ticket in flight: oldestActive %d, want %d", got, want)
	}
}
