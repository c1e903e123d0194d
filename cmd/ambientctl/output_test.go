package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

func TestObjectTableColumnsAndCells(t *testing.T) {
	var items []map[string]any
	raw := `[{"name":"server-a","namespace":"shop","addresses":["10.89.1.10"],"service_account":"server","extra":{"a":1}},
	         {"name":"client","namespace":"shop","addresses":["10.89.1.11","fd00::1"],"node":"am-n1"}]`
	if err := json.Unmarshal([]byte(raw), &items); err != nil {
		t.Fatal(err)
	}
	tab := objectTable(items, ztunnelViews[0].columns)
	if got, want := strings.Join(tab.Headers, " "), "NAME NAMESPACE ADDRESSES SERVICE-ACCOUNT NODE"; got != want {
		t.Errorf("headers: got %q, want %q (preferred columns that occur, in order)", got, want)
	}
	var buf bytes.Buffer
	if err := tab.write(&buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want header + 2 rows, got:\n%s", buf.String())
	}
	if !strings.Contains(lines[2], "10.89.1.11,fd00::1") || !strings.Contains(lines[2], "am-n1") {
		t.Errorf("lists must be joined by commas: %q", lines[2])
	}
	if !strings.Contains(lines[1], "<none>") {
		t.Errorf("a missing value must print <none> like kubectl: %q", lines[1])
	}
}

func TestObjectTableFallsBackToSortedKeys(t *testing.T) {
	tab := objectTable([]map[string]any{{"zeta": 1.0, "alpha": true}}, []string{"name"})
	if got := strings.Join(tab.Headers, " "); got != "ALPHA ZETA" {
		t.Errorf("headers: %q", got)
	}
	if got := strings.Join(tab.Rows[0], " "); got != "true 1" {
		t.Errorf("row: %q", got)
	}
}

func TestHeader(t *testing.T) {
	for in, want := range map[string]string{"sourceIdentity": "SOURCE-IDENTITY", "service_account": "SERVICE-ACCOUNT", "name": "NAME"} {
		if got := header(in); got != want {
			t.Errorf("header(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWriteFormats(t *testing.T) {
	v := map[string]any{"phase": "Ready"}
	tab := Table{Headers: []string{"PHASE"}, Rows: [][]string{{"Ready"}}}
	for format, want := range map[string]string{"json": "\"phase\": \"Ready\"", "yaml": "phase: Ready", "table": "PHASE"} {
		var buf bytes.Buffer
		if err := write(&buf, format, v, tab); err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		if !strings.Contains(buf.String(), want) {
			t.Errorf("-o %s: %q does not contain %q", format, buf.String(), want)
		}
	}
	if err := write(&bytes.Buffer{}, "xml", v, tab); err == nil || !strings.Contains(err.Error(), "want table, json or yaml") {
		t.Errorf("-o xml must be refused with the accepted formats, got %v", err)
	}
}

func TestStatusTable(t *testing.T) {
	mesh := &meshv1alpha1.AmbientMesh{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	mesh.Status.Version = "0.1.0"
	mesh.Status.Phase = "Ready"
	mesh.Status.Components.ZTunnel = meshv1alpha1.ComponentStatus{Version: "0.1.0", Desired: 2, Ready: 1, Updated: 2}
	mesh.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: metav1.ConditionFalse, Reason: "ComponentsNotReady", Message: "ztunnel 1/2"}}
	tab := statusTable(mesh)
	var buf bytes.Buffer
	_ = tab.write(&buf)
	out := buf.String()
	for _, want := range []string{"AmbientMesh   default", "ztunnel", "1/2", "ComponentsNotReady", "ztunnel 1/2", "False"} {
		if !strings.Contains(out, want) {
			t.Errorf("status table lacks %q:\n%s", want, out)
		}
	}
}
