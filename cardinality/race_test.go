//go:build race

package cardinality

// raceEnabled is true when built with -race, which makes allocation counts
// meaningless.
const raceEnabled = true
