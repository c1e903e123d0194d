package conflist

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"

	"github.com/ambientmesh/ambient-operator/dataplane/cni/wire"
)

// Installer keeps the plugin binary in the host's CNI bin dir and its entry
// in the primary network config, re-inserting the entry whenever the
// primary CNI rewrites (or first writes) its config.
type Installer struct {
	// BinarySource is the plugin binary shipped with the agent.
	BinarySource string
	// BinDir and ConfDir are the host's CNI directories.
	BinDir  string
	ConfDir string
	// Entry is the plugin's conflist entry; Entry["type"] names the binary.
	Entry map[string]any
	Log   logr.Logger
	// OnChange, when set, is called after each write (metrics).
	OnChange func()

	installed atomic.Bool
}

func (i *Installer) typ() string { t, _ := i.Entry["type"].(string); return t }

// Installed reports whether the binary and the entry were in place at the
// last check (the agent's readiness).
func (i *Installer) Installed() bool { return i.installed.Load() }

// InstallBinary copies the plugin into BinDir atomically when it differs.
func (i *Installer) InstallBinary() (bool, error) {
	want, err := os.ReadFile(i.BinarySource)
	if err != nil {
		return false, fmt.Errorf("read plugin binary: %w", err)
	}
	dst := filepath.Join(i.BinDir, i.typ())
	if have, err := os.ReadFile(dst); err == nil && bytes.Equal(have, want) {
		return false, nil
	}
	if err := wire.WriteFileAtomic(dst, want, 0o755); err != nil {
		return false, fmt.Errorf("install plugin binary: %w", err)
	}
	return true, nil
}

// Sync installs the binary and the entry once.
func (i *Installer) Sync() error {
	binChanged, err := i.InstallBinary()
	if err != nil {
		i.installed.Store(false)
		return err
	}
	path, confChanged, err := EnsureInserted(i.ConfDir, i.Entry)
	if err != nil {
		i.installed.Store(false)
		return err
	}
	i.installed.Store(path != "")
	if path == "" {
		i.Log.Info("no primary CNI config yet; waiting for the primary network plugin", "confDir", i.ConfDir)
	}
	if binChanged || confChanged {
		i.Log.Info("CNI plugin installed", "binary", filepath.Join(i.BinDir, i.typ()), "config", path)
		if i.OnChange != nil {
			i.OnChange()
		}
	}
	return nil
}

// Run syncs now and after every change in ConfDir until ctx ends. It does
// not uninstall on return: a restarting agent must not leave pods to start
// without the plugin.
func (i *Installer) Run(ctx context.Context) error {
	if err := os.MkdirAll(i.ConfDir, 0o755); err != nil {
		return err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Add(i.ConfDir); err != nil {
		return fmt.Errorf("watch %s: %w", i.ConfDir, err)
	}
	if err := i.Sync(); err != nil {
		i.Log.Error(err, "installing CNI plugin")
	}
	// A slow periodic sync also repairs a removed binary (BinDir is not watched).
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("conf dir watcher closed")
			}
			if filepath.Base(ev.Name)[0] == '.' {
				continue // our own temporary files
			}
		case err := <-w.Errors:
			i.Log.Error(err, "watching CNI conf dir")
		case <-tick.C:
		}
		if err := i.Sync(); err != nil {
			i.Log.Error(err, "re-installing CNI plugin")
		}
	}
}

// Uninstall removes the entry from every config and the binary.
func (i *Installer) Uninstall() error {
	i.installed.Store(false)
	err := EnsureRemoved(i.ConfDir, i.typ())
	if rerr := os.Remove(filepath.Join(i.BinDir, i.typ())); rerr != nil && !os.IsNotExist(rerr) {
		err = errors.Join(err, rerr)
	}
	return err
}
