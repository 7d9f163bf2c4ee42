//go:build race

package meshgen

const raceEnabled = true
