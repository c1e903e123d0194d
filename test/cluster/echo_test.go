package cluster

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The app pods run Istio's echo image (hack/echo): its server answers every
// request with what it saw, and its client, exec'd in the client pod, prints
// that answer as "[i] Field=value" lines ("[i body] Field=value" for what the
// server wrote). The client exits 0 whatever the status code, and non-zero
// when a request got no answer at all.
const echoClient = "/usr/local/bin/client"

// echoResponse is one request's outcome as the echo client printed it.
type echoResponse struct {
	Code     int         // the HTTP status code
	Hostname string      // the server pod that answered; empty when no echo server did (a proxy's own answer)
	IP       string      // the source address of the connection the server accepted
	URL      string      // the path and query the server saw
	Headers  http.Header // the request headers the server saw
}

var echoLine = regexp.MustCompile(`^\[(\d+)( body)?\] (\w+)=(.*)$`)

// parseEcho reads the echo client's output: one response per request index.
func parseEcho(out string) (map[int]*echoResponse, error) {
	responses := map[int]*echoResponse{}
	for _, line := range strings.Split(out, "\n") {
		m := echoLine.FindStringSubmatch(strings.TrimRight(line, "\r"))
		if m == nil {
			continue
		}
		i, _ := strconv.Atoi(m[1])
		r := responses[i]
		if r == nil {
			r = &echoResponse{Headers: http.Header{}}
			responses[i] = r
		}
		fromServer, field, value := m[2] != "", m[3], m[4]
		switch {
		case !fromServer && field == "StatusCode":
			code, err := strconv.Atoi(value)
			if err != nil {
				return nil, fmt.Errorf("echo client line %q: %w", line, err)
			}
			r.Code = code
		case fromServer && field == "Hostname":
			r.Hostname = value
		case fromServer && field == "IP":
			r.IP = value
		case fromServer && field == "URL":
			r.URL = value
		case fromServer && field == "RequestHeader":
			name, v, _ := strings.Cut(value, ":")
			r.Headers.Add(name, v)
		}
	}
	return responses, nil
}

// echoGet runs the echo client in the client pod: one GET of url with the
// given "Name:value" headers. The error is set when the request got no
// answer (or the exec failed); any status code is a response.
func echoGet(ctx context.Context, url string, headers ...string) (*echoResponse, error) {
	args := []string{"-n", appNamespace, "exec", "deploy/client", "--", echoClient, url}
	for _, h := range headers {
		args = append(args, "-H", h)
	}
	out, err := kubectl(ctx, "", args...)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, out)
	}
	responses, err := parseEcho(out)
	if err != nil {
		return nil, err
	}
	if r := responses[0]; r != nil && r.Code != 0 {
		return r, nil
	}
	return nil, fmt.Errorf("no status code in the echo client's output: %s", out)
}

// echoOK is echoGet that also wants a 200 from an echo server pod.
func echoOK(ctx context.Context, url string, headers ...string) (*echoResponse, error) {
	r, err := echoGet(ctx, url, headers...)
	if err != nil {
		return nil, err
	}
	if r.Code != http.StatusOK || r.Hostname == "" {
		return nil, fmt.Errorf("GET %s: status %d from %q, want 200 from an echo server", url, r.Code, r.Hostname)
	}
	return r, nil
}

var (
	echoErrors   = regexp.MustCompile(`(\d+)/(\d+) requests had errors; first error: (.*)`)
	echoTimedOut = regexp.MustCompile(`request set timed out after \S+ and only (\d+)/(\d+) requests completed`)
)

// countEchoBatch counts the failed requests of an echo client run of n
// requests from its output and exit error: requests with no answer, and
// answers other than 200. failure describes the first failure. err is set
// when the output says nothing about the requests (the exec itself failed).
func countEchoBatch(out string, runErr error, n int) (failed int, failure string, err error) {
	if runErr == nil {
		responses, err := parseEcho(out)
		if err != nil {
			return 0, "", err
		}
		for i := range n {
			if r := responses[i]; r == nil || r.Code != http.StatusOK {
				failed++
				if failure == "" {
					failure = fmt.Sprintf("request %d: %+v", i, r)
				}
			}
		}
		return failed, failure, nil
	}
	text := out + runErr.Error()
	if m := echoErrors.FindStringSubmatch(text); m != nil {
		failed, _ = strconv.Atoi(m[1])
		return failed, m[0], nil
	}
	if m := echoTimedOut.FindStringSubmatch(text); m != nil {
		completed, _ := strconv.Atoi(m[1])
		return n - completed, m[0], nil
	}
	return 0, "", fmt.Errorf("echo client run: %w: %s", runErr, out)
}

// The parsing above against the echo client's real output (bin/echo/client
// against bin/echo/server on 127.0.0.1), so a change of format shows here
// and not as a puzzling failure on the cluster.
func TestParseEcho(t *testing.T) {
	out := `[0] Url=http://127.0.0.1:18080/hello
[0] Header=X-Test:abc
[0] SourceIP=127.0.0.1
[0] StatusCode=200
[0] ResponseHeader=Content-Type:text/plain; charset=utf-8
[0 body] ServicePort=18080
[0 body] URL=/hello
[0 body] IP=10.78.1.7
[0 body] RequestHeader=User-Agent:Go-http-client/1.1
[0 body] RequestHeader=X-Test:abc
[0 body] Hostname=server-5d4f-abcde

[1] Url=http://127.0.0.1:18080/hello
[1] StatusCode=503

2026-12-06T20:10:15.091168Z	info	All 2 requests succeeded
`
	responses, err := parseEcho(out)
	if err != nil {
		t.Fatal(err)
	}
	r := responses[0]
	if r.Code != 200 || r.Hostname != "server-5d4f-abcde" || r.IP != "10.78.1.7" || r.URL != "/hello" || r.Headers.Get("x-test") != "abc" {
		t.Errorf("response 0: %+v", r)
	}
	if responses[1].Code != 503 || responses[1].Hostname != "" {
		t.Errorf("response 1: %+v", responses[1])
	}
	if failed, _, err := countEchoBatch(out, nil, 3); err != nil || failed != 2 {
		t.Errorf("countEchoBatch of 3 with one 503 and one missing: failed %d, %v", failed, err)
	}

	runErr := fmt.Errorf("kubectl exec: exit status 1")
	fatal := "2026-12-06T20:11:43.564457Z\tfatal\tError 3/20 requests had errors; first error: Get \"http:/x\": connection refused\n"
	if failed, failure, err := countEchoBatch(fatal, runErr, 20); err != nil || failed != 3 || !strings.Contains(failure, "connection refused") {
		t.Errorf("countEchoBatch of errors: %d %q %v", failed, failure, err)
	}
	timedOut := "fatal\tError request set timed out after 20s and only 15/20 requests completed (3ms avg)\n"
	if failed, _, err := countEchoBatch(timedOut, runErr, 20); err != nil || failed != 5 {
		t.Errorf("countEchoBatch of a timeout: %d %v", failed, err)
	}
	if _, _, err := countEchoBatch("", runErr, 20); err == nil {
		t.Error("countEchoBatch: an exec failure with no output was counted")
	}
}
