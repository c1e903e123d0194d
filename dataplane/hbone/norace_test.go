//go:build !race

package hbone

// raceSlowdown scales timing checks: the race detector makes the code
// several times slower.
const raceSlowdown = 1
