package localmesh

import (
	"reflect"
	"testing"
)

func TestParseCurlPairsBodiesWithStatusCodes(t *testing.T) {
	// curl -w '\n%{http_code}\n' over three URLs: a backend's answer, the
	// waypoint's 403 (not one of our bodies), a failed connection (000).
	out := "hello from l7/reviews-v1 (GET /)\n\n200\nRBAC: access denied\n403\n\n000\n"
	want := []Response{{200, "l7/reviews-v1"}, {403, ""}, {0, ""}}
	if got := parseCurl(out); !reflect.DeepEqual(got, want) {
		t.Errorf("parseCurl:\n got %+v\nwant %+v", got, want)
	}
	if got := Tally(want); !reflect.DeepEqual(got, map[string]int{"200 l7/reviews-v1": 1, "403": 1, "0": 1}) {
		t.Errorf("Tally: %v", got)
	}
}

func TestKeepLabels(t *testing.T) {
	line := `istio_requests_total{destination_service="a.b",path="x,y",reporter="waypoint",response_code="200"} 7`
	if got, want := keepLabels(line, "reporter", "response_code"), `istio_requests_total{reporter="waypoint",response_code="200"} 7`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestRequestsTotalSumsMatchingLines(t *testing.T) {
	metrics := "# TYPE istio_requests_total counter\n" +
		`istio_requests_total{reporter="waypoint",response_code="200"} 3` + "\n" +
		`istio_requests_total{reporter="waypoint",response_code="403"} 2` + "\n" +
		`istio_requests_total{reporter="destination",response_code="200"} 5` + "\n"
	if got := RequestsTotal(metrics, "istio_requests_total", `reporter="waypoint"`); got != 5 {
		t.Errorf("got %v, want 5", got)
	}
}
