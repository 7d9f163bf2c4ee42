//go:build !race

package rematch

const raceEnabled = false
