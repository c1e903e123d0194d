package main

import (
	"os"
	"runtime/debug"
	"testing"
)

func TestDefaultGCPercentYieldsToGOGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "")
	if err := os.Unsetenv("GOGC"); err != nil {
		t.Fatal(err)
	}
	setDefaultGCPercent()
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Fatalf("without GOGC the GC percent is %d, want %d", got, defaultGCPercent)
	}
	t.Setenv("GOGC", "200") // as if set at start: the runtime read it then
	setDefaultGCPercent()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("with GOGC set, the GC percent was changed to %d", got)
	}
}
