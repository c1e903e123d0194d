package wire

import (
	"path/filepath"
	"strings"
	"testing"
)

func validRequest() Request {
	return Request{Command: CommandAdd, ContainerID: "abc123", Netns: "/var/run/netns/cni-1", IfName: "eth0",
		PodName: "web-0", PodNamespace: "shop", PodUID: "5f1c", IPs: []string{"10.244.0.5"}}
}

func TestRequestRoundTrip(t *testing.T) {
	r := validRequest()
	body, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	if got.PodName != "web-0" || got.Addrs()[0].String() != "10.244.0.5" {
		t.Fatalf("round trip lost data: %+v", got)
	}
}

func TestDecodeRequestNamesTheBadField(t *testing.T) {
	for name, tc := range map[string]struct {
		body  string
		field string
	}{
		"unknown command": {`{"command":"CHECK","containerID":"a","netns":"/n","podName":"p","podNamespace":"n"}`, "command"},
		"no container":    {`{"command":"DEL","podName":"p","podNamespace":"n"}`, "containerID"},
		"bad pod name":    {`{"command":"DEL","containerID":"a","podName":"P_Q","podNamespace":"n"}`, "podName"},
		"bad namespace":   {`{"command":"DEL","containerID":"a","podName":"p","podNamespace":"a.b"}`, "podNamespace"},
		"relative netns":  {`{"command":"ADD","containerID":"a","netns":"proc/1/ns/net","podName":"p","podNamespace":"n"}`, "netns"},
		"dotdot netns":    {`{"command":"ADD","containerID":"a","netns":"/var/../etc","podName":"p","podNamespace":"n"}`, "netns"},
		"file as netns":   {`{"command":"ADD","containerID":"a","netns":"/etc/shadow","podName":"p","podNamespace":"n"}`, "netns"},
		"add no netns":    {`{"command":"ADD","containerID":"a","podName":"p","podNamespace":"n"}`, "netns"},
		"bad ip":          {`{"command":"DEL","containerID":"a","podName":"p","podNamespace":"n","ips":["10.0.0.300"]}`, "ips[0]"},
		"unknown field":   {`{"command":"DEL","containerID":"a","podName":"p","podNamespace":"n","token":"x"}`, "unknown field"},
		"trailing data":   {`{"command":"DEL","containerID":"a","podName":"p","podNamespace":"n"} {}`, "trailing"},
		"not json":        {`ADD pod`, "invalid character"},
		"too big":         {`{"command":"` + strings.Repeat("A", MaxMessageSize) + `"}`, "exceeds"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeRequest([]byte(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %v, want one naming %q", err, tc.field)
			}
		})
	}
}

func TestValidateNetnsPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/var/run/netns/cni-5f1c2a3e-77aa-4d09-b1f0-2c2bd3c1d7e4", true}, // containerd
		{"/var/run/netns/6b3e2a10-1111-4c2e-9e0c-5a1f0f0c0a0b", true},     // CRI-O
		{"/run/netns/am-n1-shop-web", true},                               // local mesh style, under /run
		{"/proc/4242/ns/net", true},                                       // a pid (cri-dockerd)
		{"/proc/1/ns/net", true},
		{"/var/run/netns/a.b_c-d", true},
		{"", false},
		{"/", false},
		{"/var/run/netns", false},
		{"/var/run/netns/", false},
		{"/var/run/netns/.", false},
		{"/var/run/netns/..", false},
		{"/var/run/netns/../../etc/shadow", false},
		{"/var/run/netns/a/b", false},
		{"/var/run/netns/a..b", false},
		{"/var/run/netns/a\x00b", false},
		{"/var/run/netns/" + strings.Repeat("n", 256), false},
		{"var/run/netns/x", false},
		{"/var/run/netnsx/y", false},
		{"/run/netns//x", false},
		{"/proc/self/ns/net", false},
		{"/proc/thread-self/ns/net", false},
		{"/proc/12/ns/mnt", false},
		{"/proc/12/ns/net/", false},
		{"/proc//ns/net", false},
		{"/proc/-1/ns/net", false},
		{"/proc/1/../1/ns/net", false},
		{"/proc/12345678901/ns/net", false},
		{"/proc/1/root/var/run/netns/x", false},
		{"/etc/shadow", false},
		{"/dev/sda", false},
		{"/tmp/netns/x", false},
	} {
		err := ValidateNetnsPath(tc.path)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateNetnsPath(%q) = %v, want accepted=%v", tc.path, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "/proc/<pid>/ns/net, /var/run/netns/<name> or /run/netns/<name>") {
			t.Errorf("ValidateNetnsPath(%q) = %q, want the accepted forms named", tc.path, err)
		}
	}
}

func TestEnrollmentState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "enrollment.json")
	missing, err := ReadState(path)
	if err != nil || missing.Enrolled("shop", "web") {
		t.Fatalf("a missing state file must enroll nothing: %v", err)
	}
	s := &EnrollmentState{Namespaces: []string{"shop"}, Pods: map[string]bool{"shop/legacy": false, "other/special": true}}
	if err := WriteState(path, s); err != nil {
		t.Fatal(err)
	}
	got, err := ReadState(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ns, pod string
		want    bool
	}{
		{"shop", "web", true},       // namespace label
		{"shop", "legacy", false},   // pod opts out
		{"other", "special", true},  // pod opts in
		{"other", "plain", false},   // neither
		{"kube-system", "x", false}, // neither
	} {
		if got.Enrolled(tc.ns, tc.pod) != tc.want {
			t.Errorf("Enrolled(%s/%s) = %v, want %v", tc.ns, tc.pod, !tc.want, tc.want)
		}
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*"))
	if len(matches) != 0 {
		t.Fatalf("temporary files left behind: %v", matches)
	}
}
