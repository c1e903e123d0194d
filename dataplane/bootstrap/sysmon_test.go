package bootstrap

import (
	"strings"
	"testing"
)

func TestWithSysmonAwake(t *testing.T) {
	for _, tc := range []struct {
		env     []string
		want    []string
		changed bool
	}{
		{env: []string{"A=1"}, want: []string{"A=1", "GODEBUG=" + SysmonAwake}, changed: true},
		{env: []string{"GODEBUG=madvdontneed=1", "A=1"}, want: []string{"A=1", "GODEBUG=madvdontneed=1," + SysmonAwake}, changed: true},
		{env: []string{"GODEBUG=", "A=1"}, want: []string{"A=1", "GODEBUG=" + SysmonAwake}, changed: true},
		// An explicit choice wins, whatever its value (schedtrace=0 opts out).
		{env: []string{"GODEBUG=schedtrace=0"}, want: []string{"GODEBUG=schedtrace=0"}},
		{env: []string{"GODEBUG=x=1,schedtrace=1000"}, want: []string{"GODEBUG=x=1,schedtrace=1000"}},
	} {
		got, changed := WithSysmonAwake(tc.env)
		if changed != tc.changed || strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("withSysmonAwake(%q) = %q, %v; want %q, %v", tc.env, got, changed, tc.want, tc.changed)
		}
	}
}
