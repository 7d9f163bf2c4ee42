//go:build !race

package forward

// raceEnabled is true when built with -race, which makes allocation counts
// meaningless.
const raceEnabled = false
