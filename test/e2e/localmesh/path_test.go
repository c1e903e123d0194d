package localmesh

import "testing"

func TestPathMapTranslatesLongestFirst(t *testing.T) {
	var p pathMap
	p.add("/usr/local/bin/ambientmesh-cni", "/repo/bin/cni-plugin")
	p.add("/var/run/ambientmesh", "/state/nodes/am-n1/var/run/ambientmesh")
	p.add("/var/run/ambientmesh/ztunnel", "/state/pods/zt/handoff")
	cases := map[string]string{
		"--plugin-binary=/usr/local/bin/ambientmesh-cni":      "--plugin-binary=/repo/bin/cni-plugin",
		"--run-dir=/var/run/ambientmesh":                      "--run-dir=/state/nodes/am-n1/var/run/ambientmesh",
		"handoffSocket: /var/run/ambientmesh/ztunnel/zt.sock": "handoffSocket: /state/pods/zt/handoff/zt.sock",
		"--node-name=am-n1":                                   "--node-name=am-n1",
	}
	for in, want := range cases {
		if got := p.translate(in); got != want {
			t.Errorf("translate(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestExpandVars(t *testing.T) {
	got := expandVars("--node-name=$(NODE_NAME) $(UNKNOWN)", map[string]string{"NODE_NAME": "am-n1"})
	if got != "--node-name=am-n1 $(UNKNOWN)" {
		t.Errorf("got %q", got)
	}
}
