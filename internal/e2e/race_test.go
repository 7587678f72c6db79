//go:build race

package e2e

// raceEnabled is true when the tests run with -race: the registry-edge binary
// under test is then built with -race too, and a data race it reports fails
// the test that started it.
const raceEnabled = true
