//go:build race

package relabel

// raceEnabled is true when built with -race, which makes allocation counts
// meaningless; the zero-allocation tests skip then.
const raceEnabled = true
