package localmesh

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/netnstest"
)

// The state names exactly the namespaces createNetns made: Down after a partial Up removes
// them, leaves alone a namespace of the same name that existed before, and a namespace
// that could not be recorded is not left behind. Names avoid the am- prefix, which a
// running local mesh's leftover check would count as its own.
func TestCreateNetnsRecordsWhatExists(t *testing.T) {
	netnstest.RequireRoot(t)
	exists := func(name string) bool { _, err := os.Stat(NetnsPath(name)); return err == nil }

	t.Run("made and recorded, removed by Down", func(t *testing.T) {
		dir, name := t.TempDir(), netnstest.UniqueName("lmtest")
		t.Cleanup(func() { _ = deleteNetns(name) })
		st := &State{dir: dir}
		if err := createNetns(st, name); err != nil {
			t.Fatal(err)
		}
		if !exists(name) || !slices.Equal(recordedNetns(t, dir), []string{name}) {
			t.Fatalf("after createNetns: exists %v, recorded %v; want both", exists(name), recordedNetns(t, dir))
		}
		if err := Down(dir, time.Second); err != nil || exists(name) {
			t.Fatalf("Down = %v, namespace still there: %v", err, exists(name))
		}
	})

	t.Run("someone else's namespace is neither recorded nor removed", func(t *testing.T) {
		dir, theirs := t.TempDir(), netnstest.New(t, "lmtest")
		st := &State{dir: dir}
		if err := st.update(func(*State) {}); err != nil {
			t.Fatal(err)
		}
		if err := createNetns(st, theirs.Name); err == nil {
			t.Fatalf("createNetns(%s) over an existing namespace: want an error", theirs.Name)
		}
		if got := recordedNetns(t, dir); len(got) != 0 {
			t.Fatalf("recorded %v after a failed create; want none", got)
		}
		if err := Down(dir, time.Second); err != nil || !exists(theirs.Name) {
			t.Fatalf("Down = %v, their namespace exists: %v; want it kept", err, exists(theirs.Name))
		}
	})

	t.Run("a namespace that cannot be recorded is deleted again", func(t *testing.T) {
		name := netnstest.UniqueName("lmtest")
		t.Cleanup(func() { _ = deleteNetns(name) })
		st := &State{dir: filepath.Join(t.TempDir(), "missing")} // the state file cannot be written
		if err := createNetns(st, name); err == nil || exists(name) {
			t.Fatalf("createNetns = %v, namespace exists: %v; want an error and no namespace", err, exists(name))
		}
	})
}

func recordedNetns(t *testing.T, dir string) []string {
	t.Helper()
	s, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s.Netns
}
