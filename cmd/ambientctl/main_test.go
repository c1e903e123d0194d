package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{
		"bash": "complete -o default -F __start_ambientctl ambientctl",
		"zsh":  "#compdef ambientctl",
		"fish": "complete -c ambientctl",
	} {
		var out bytes.Buffer
		if err := run([]string{"completion", shell}, &out); err != nil {
			t.Fatalf("completion %s: %v", shell, err)
		}
		// The script asks ambientctl itself what to complete (TestCompletions).
		if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "__complete") {
			t.Errorf("completion %s: the script lacks %q or the call back to ambientctl __complete", shell, want)
		}
	}
}

// complete is what a shell's completion gets for args, the last being the word
// being completed, without the descriptions.
func complete(t *testing.T, args ...string) []string {
	t.Helper()
	var out bytes.Buffer
	if err := run(append([]string{"__complete"}, args...), &out); err != nil {
		t.Fatalf("__complete %q: %v", args, err)
	}
	var words []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if !strings.HasPrefix(line, ":") { // the last line is the shell directive
			word, _, _ := strings.Cut(line, "\t")
			words = append(words, word)
		}
	}
	return words
}

func TestCompletions(t *testing.T) {
	ab, _ := writeKubeconfigs(t)
	globals := []string{"--context", "--kubeconfig", "--namespace", "--output"}
	cases := []struct {
		name string
		args []string
		want []string // all of these, or
		only []string // exactly these
	}{
		{name: "commands", args: []string{""},
			want: []string{"check", "completion", "status", "version", "waypoint", "why", "ztunnel"}},
		{name: "ztunnel views", args: []string{"ztunnel", ""},
			only: []string{"certs", "connections", "policies", "renew-certs", "services", "workloads"}},
		{name: "waypoint views", args: []string{"waypoint", ""}, only: []string{"clusters", "config", "routes", "status"}},
		{name: "a ztunnel view's flags and the global ones", args: []string{"ztunnel", "certs", "--"},
			want: append([]string{"--node", "--pod", "--via", "--netns-dir", "--admin-address", "--mesh"}, globals...)},
		{name: "why's flags and the global ones", args: []string{"why", "--"},
			want: append([]string{"--method", "--path", "--host", "--header", "--token", "--mesh", "--cluster-domain"}, globals...)},
		{name: "--via", args: []string{"waypoint", "status", "--via", ""}, only: []string{"port-forward", "netns", "address"}},
		{name: "-o", args: []string{"status", "-o", ""}, only: []string{"table", "json", "yaml"}},
		{name: "--context from the kubeconfig", args: []string{"--kubeconfig", ab, "status", "--context", ""}, only: []string{"a", "b"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := complete(t, tc.args...)
			if tc.only != nil && !slices.Equal(got, tc.only) {
				t.Errorf("got %q, want %q", got, tc.only)
			}
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("%q lacks %q", got, w)
				}
			}
		})
	}
}
