package testenv

import (
	"strings"
	"testing"
)

func TestDecodeObjectsReadsEveryDocumentAndSkipsEmptyOnes(t *testing.T) {
	stream := `---
apiVersion: v1
kind: Namespace
metadata:
  name: a
---
# only a comment
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: b
  namespace: a
`
	objs, err := DecodeObjects(strings.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.GetKind()+"/"+o.GetName())
	}
	if strings.Join(got, ",") != "Namespace/a,ConfigMap/b" {
		t.Fatalf("decoded %v, want [Namespace/a ConfigMap/b]", got)
	}
}

func TestDecodeObjectsReportsBadYAML(t *testing.T) {
	_, err := DecodeObjects(strings.NewReader("kind: [unclosed\n"))
	if err == nil {
		t.Fatal("a malformed document decoded without an error")
	}
}
