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
