//go:build race

package u64table

const raceEnabled = true
