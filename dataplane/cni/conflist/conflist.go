// Package conflist inserts the ambient-cni plugin into the node's primary
// CNI network configuration and takes it out again. The primary
// configuration is the one a container runtime picks: the first file, in
// lexical order, of the conf dir ending in .conflist, .conf or .json.
//
// A .conflist gets the plugin appended to its "plugins" list; a single
// plugin .conf/.json is rewritten as a .conflist with the original plugin
// first (the .conf is removed once the .conflist is in place). Files are
// replaced atomically (temporary file + rename) and only when their content
// changes, so a watcher reacting to its own write settles at once.
package conflist

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ambientmesh/ambient-operator/dataplane/cni/wire"
)

// Primary returns the path of the conf dir's primary network config, or
// "" if there is none yet (the primary CNI has not written it).
func Primary(confDir string) (string, error) {
	entries, err := os.ReadDir(confDir)
	if err != nil {
		return "", err
	}
	var names []string
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".conflist", ".conf", ".json":
			if !e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				names = append(names, e.Name())
			}
		}
	}
	if len(names) == 0 {
		return "", nil
	}
	slices.Sort(names)
	return filepath.Join(confDir, names[0]), nil
}

// Insert returns the config with entry as the last plugin (replacing an
// earlier entry of the same type), converting a single-plugin config to a
// list. entry must have a "type".
func Insert(config []byte, entry map[string]any) ([]byte, error) {
	typ, _ := entry["type"].(string)
	if typ == "" {
		return nil, errors.New("plugin entry: type is required")
	}
	list, err := asList(config)
	if err != nil {
		return nil, err
	}
	plugins := list["plugins"].([]any)
	plugins = slices.DeleteFunc(plugins, func(p any) bool { return pluginType(p) == typ })
	list["plugins"] = append(plugins, entry)
	return encode(list)
}

// Remove returns the config without plugins of type typ.
func Remove(config []byte, typ string) ([]byte, error) {
	list, err := asList(config)
	if err != nil {
		return nil, err
	}
	list["plugins"] = slices.DeleteFunc(list["plugins"].([]any), func(p any) bool { return pluginType(p) == typ })
	return encode(list)
}

// Contains reports whether the config lists a plugin of type typ.
func Contains(config []byte, typ string) bool {
	list, err := asList(config)
	return err == nil && slices.ContainsFunc(list["plugins"].([]any), func(p any) bool { return pluginType(p) == typ })
}

func pluginType(p any) string {
	m, _ := p.(map[string]any)
	t, _ := m["type"].(string)
	return t
}

// asList parses a conflist, or wraps a single-plugin conf into one.
func asList(config []byte) (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(config, &m); err != nil {
		return nil, fmt.Errorf("network config is not a JSON object: %w", err)
	}
	if raw, ok := m["plugins"]; ok {
		if _, ok := raw.([]any); !ok {
			return nil, errors.New("network config: plugins: not a list")
		}
		return m, nil
	}
	if _, ok := m["type"].(string); !ok {
		return nil, errors.New("network config: neither a plugins list nor a plugin type")
	}
	list := map[string]any{"cniVersion": m["cniVersion"], "name": m["name"]}
	delete(m, "name") // a plugin in a list has no name of its own
	list["plugins"] = []any{m}
	return list, nil
}

func encode(list map[string]any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(list); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// EnsureInserted puts entry into the primary config of confDir. It returns
// the file it wrote (or found up to date) and whether it changed anything;
// path is "" when there is no primary config yet.
func EnsureInserted(confDir string, entry map[string]any) (path string, changed bool, err error) {
	primary, err := Primary(confDir)
	if err != nil || primary == "" {
		return "", false, err
	}
	old, err := os.ReadFile(primary)
	if err != nil {
		return "", false, err
	}
	updated, err := Insert(old, entry)
	if err != nil {
		return "", false, fmt.Errorf("%s: %w", primary, err)
	}
	target := primary
	if filepath.Ext(primary) != ".conflist" {
		target = strings.TrimSuffix(primary, filepath.Ext(primary)) + ".conflist"
	}
	if target == primary && sameJSON(old, updated) {
		return primary, false, nil
	}
	if err := wire.WriteFileAtomic(target, updated, 0o644); err != nil {
		return "", false, err
	}
	if target != primary {
		// The .conflist sorts before nothing else changed; drop the .conf so
		// the runtime does not see the network twice.
		if err := os.Remove(primary); err != nil {
			return "", false, err
		}
	}
	return target, true, nil
}

// EnsureRemoved takes plugins of type typ out of every config in confDir.
func EnsureRemoved(confDir, typ string) error {
	entries, err := os.ReadDir(confDir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") || filepath.Ext(e.Name()) != ".conflist" {
			continue
		}
		path := filepath.Join(confDir, e.Name())
		old, err := os.ReadFile(path)
		if err != nil || !Contains(old, typ) {
			continue
		}
		updated, err := Remove(old, typ)
		if err == nil {
			err = wire.WriteFileAtomic(path, updated, 0o644)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func sameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}
