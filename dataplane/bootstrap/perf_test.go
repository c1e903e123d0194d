package bootstrap

import "testing"

func TestPerfDevicesFromEnv(t *testing.T) {
	allOn := PerfDevices{SysmonAwake: true, Workers: true, SpareSockets: true}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    PerfDevices
		wantErr bool
	}{
		{name: "nothing set: all on", want: allOn},
		{name: "explicitly on", env: map[string]string{EnvPerfSysmon: "on", EnvPerfWorkers: "on", EnvPerfSpareSockets: "on"}, want: allOn},
		{name: "sysmon off", env: map[string]string{EnvPerfSysmon: "off"}, want: PerfDevices{Workers: true, SpareSockets: true}},
		{name: "workers off", env: map[string]string{EnvPerfWorkers: "off"}, want: PerfDevices{SysmonAwake: true, SpareSockets: true}},
		{name: "spare sockets off", env: map[string]string{EnvPerfSpareSockets: "off"}, want: PerfDevices{SysmonAwake: true, Workers: true}},
		{name: "all off", env: map[string]string{EnvPerfSysmon: "off", EnvPerfWorkers: "off", EnvPerfSpareSockets: "off"}},
		{name: "a typo is an error", env: map[string]string{EnvPerfWorkers: "of"}, wantErr: true},
		{name: "values are lower case", env: map[string]string{EnvPerfSysmon: "OFF"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PerfDevicesFromEnv(func(k string) string { return tc.env[k] })
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
