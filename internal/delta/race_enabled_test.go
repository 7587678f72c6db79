//go:build race

package delta

// raceEnabled shrinks the heaviest tests under the race detector, which
// slows byte loops tenfold; the full sizes run without it.
const raceEnabled = true
