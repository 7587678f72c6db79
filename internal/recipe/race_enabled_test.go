//go:build race

package recipe

// raceEnabled shrinks the test layers: the race detector slows compression
// down about twentyfold.
const raceEnabled = true
