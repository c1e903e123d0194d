package main

import "testing"

func TestSettingsFor(t *testing.T) {
	tests := []struct {
		name  string
		facts hostFacts
		want  hostSettings
	}{
		{
			name:  "this VM: cgroup v1 (hybrid), no swap, no CAP_SYS_RESOURCE",
			facts: hostFacts{CgroupV2: false, Swap: false, CanLowerOOMScore: false},
			want:  hostSettings{CgroupDriver: "cgroupfs", FailCgroupV1: false, FailSwapOn: true, RestrictOOMScoreAdj: true, OOMScoreAdj: 0},
		},
		{
			name:  "an ordinary root on cgroup v2: upstream defaults",
			facts: hostFacts{CgroupV2: true, Swap: false, CanLowerOOMScore: true},
			want:  hostSettings{CgroupDriver: "cgroupfs", FailCgroupV1: true, FailSwapOn: true, RestrictOOMScoreAdj: false, OOMScoreAdj: -999},
		},
		{
			name:  "swap on",
			facts: hostFacts{CgroupV2: true, Swap: true, CanLowerOOMScore: true},
			want:  hostSettings{CgroupDriver: "cgroupfs", FailCgroupV1: true, FailSwapOn: false, RestrictOOMScoreAdj: false, OOMScoreAdj: -999},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := settingsFor(tt.facts); got != tt.want {
				t.Errorf("settingsFor(%+v)\n got %+v\nwant %+v", tt.facts, got, tt.want)
			}
		})
	}
}

func TestSwapActive(t *testing.T) {
	tests := []struct {
		procSwaps string
		want      bool
	}{
		{"Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n", false},
		{"Filename\tType\tSize\tUsed\tPriority\n/swapfile file 1048572 0 -2\n", true},
		{"", false},
	}
	for _, tt := range tests {
		if got := swapActive(tt.procSwaps); got != tt.want {
			t.Errorf("swapActive(%q) = %v, want %v", tt.procSwaps, got, tt.want)
		}
	}
}

func TestHasEffectiveCapability(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    bool
		wantErr bool
	}{
		{"every capability", "Name:\tx\nCapEff:\t000001ffffffffff\n", true, false},
		{"all but CAP_SYS_RESOURCE (this VM)", "CapPrm:\t000001ffffffffff\nCapEff:\t000001fffeffffff\n", false, false},
		{"none", "CapEff:\t0000000000000000\n", false, false},
		{"no CapEff line", "Name:\tx\n", false, true},
		{"garbage", "CapEff:\tzz\n", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := hasEffectiveCapability(tt.status, capSysResource)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("got %v, %v; want %v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
