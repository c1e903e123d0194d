package wire

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzDecodeRequest: the agent decodes whatever arrives on its socket; it
// must never panic, and whatever it accepts must be valid and re-encodable.
func FuzzDecodeRequest(f *testing.F) {
	r := validRequest()
	body, _ := r.Encode()
	f.Add(body)
	f.Add([]byte(`{"command":"DEL","containerID":"a","podName":"p","podNamespace":"n"}`))
	f.Add([]byte(`{"command":"ADD","containerID":"a","netns":"/var/run/netns/n","podName":"p","podNamespace":"n","ips":["::1","10.0.0.1"]}`))
	f.Add([]byte(`{"ips":[null]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeRequest(data)
		if err != nil {
			return
		}
		if err := req.Validate(); err != nil {
			t.Fatalf("accepted an invalid request: %v", err)
		}
		again, err := req.Encode()
		if err != nil {
			t.Fatalf("accepted request does not re-encode: %v", err)
		}
		if _, err := DecodeRequest(again); err != nil {
			t.Fatalf("re-encoded request does not decode: %v", err)
		}
	})
}

// FuzzValidateNetnsPath: whatever path the runtime names, validation never panics, and a
// path it accepts is clean and names a netns file directly inside /var/run/netns,
// /run/netns or a /proc/<pid>/ns directory.
func FuzzValidateNetnsPath(f *testing.F) {
	for _, seed := range []string{"/var/run/netns/cni-1", "/run/netns/x", "/proc/1/ns/net", "/proc/self/ns/net",
		"/var/run/netns/../x", "/var/run/netns/a/b", "/etc/shadow", "", "/proc/1/ns/net/.."} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, path string) {
		if ValidateNetnsPath(path) != nil {
			return
		}
		if filepath.Clean(path) != path {
			t.Fatalf("accepted %q, which is not a clean path", path)
		}
		dir, file := filepath.Split(path)
		switch {
		case dir == "/var/run/netns/" || dir == "/run/netns/":
			if file == "" || strings.Contains(file, "..") || strings.ContainsRune(file, 0) {
				t.Fatalf("accepted %q: bad netns name %q", path, file)
			}
		case file == "net" && strings.HasPrefix(dir, "/proc/") && strings.HasSuffix(dir, "/ns/"):
			pid := strings.TrimSuffix(strings.TrimPrefix(dir, "/proc/"), "/ns/")
			if _, err := strconv.ParseUint(pid, 10, 64); err != nil {
				t.Fatalf("accepted %q: pid %q is not a number", path, pid)
			}
		default:
			t.Fatalf("accepted %q, outside /var/run/netns, /run/netns and /proc/<pid>/ns", path)
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	f.Add([]byte(`{"enrolled":true}`))
	f.Add([]byte(`{"enrolled":true,"error":"ztunnel is not connected"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = DecodeResponse(data)
	})
}
