package route

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// retryOf compiles a route with the given retry policy and returns the
// policy the route ends up with.
func retryOf(t *testing.T, rp *routev3.RetryPolicy) *RetryPolicy {
	t.Helper()
	r := routeTo("r", prefixMatch("/"))
	r.GetRoute().RetryPolicy = rp
	return mustCompile(t, routeConfig(anyHost(r))).Match(request("GET", "/")).Forward.Retry
}

func TestRetryPolicyCompile(t *testing.T) {
	for _, tc := range []struct {
		name string
		rp   *routev3.RetryPolicy
		want RetryPolicy
	}{
		{"Envoy defaults", &routev3.RetryPolicy{RetryOn: "5xx"},
			RetryPolicy{NumRetries: 1, BaseInterval: 25 * time.Millisecond, MaxInterval: 250 * time.Millisecond, on: retryOn5xx}},
		{"no retries", &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(0)},
			RetryPolicy{NumRetries: 0, BaseInterval: 25 * time.Millisecond, MaxInterval: 250 * time.Millisecond, on: retryOn5xx}},
		{"configured", &routev3.RetryPolicy{
			RetryOn:              "connect-failure, refused-stream,retriable-status-codes,unavailable,cancelled",
			NumRetries:           u32(3),
			PerTryTimeout:        durationpb.New(2 * time.Second),
			RetriableStatusCodes: []uint32{503, 429},
			RetryBackOff:         &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(100 * time.Millisecond)},
		}, RetryPolicy{NumRetries: 3, PerTryTimeout: 2 * time.Second, BaseInterval: 100 * time.Millisecond, MaxInterval: time.Second,
			RetriableStatusCodes: []int{503, 429}, on: retryOnConnectFailure | retryOnRefusedStream | retryOnRetriableStatusCodes}},
		{"explicit max interval", &routev3.RetryPolicy{RetryOn: "gateway-error,reset,retriable-4xx", RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
			BaseInterval: durationpb.New(10 * time.Millisecond), MaxInterval: durationpb.New(30 * time.Millisecond)}},
			RetryPolicy{NumRetries: 1, BaseInterval: 10 * time.Millisecond, MaxInterval: 30 * time.Millisecond,
				on: retryOnGatewayError | retryOnReset | retryOnRetriable4xx}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryOf(t, tc.rp); !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("RetryPolicy = %+v, want %+v", *got, tc.want)
			}
		})
	}
}

func TestRetryPolicyFromVirtualHost(t *testing.T) {
	own := routeTo("own", exactMatch("/own"))
	own.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "reset", NumRetries: u32(5)}
	vh := anyHost(own, routeTo("inherits", prefixMatch("/")))
	vh.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(2)}
	tbl := mustCompile(t, routeConfig(vh, vhost("bare", []string{"bare"}, routeTo("none", prefixMatch("/")))))

	if p := tbl.Match(request("GET", "/own")).Forward.Retry; p.NumRetries != 5 || p.on != retryOnReset {
		t.Errorf("route policy = %+v, want the route's own (not merged)", p)
	}
	if p := tbl.Match(request("GET", "/x")).Forward.Retry; p == nil || p.NumRetries != 2 || p.on != retryOn5xx {
		t.Errorf("inherited policy = %+v, want the virtual host's", p)
	}
	r := request("GET", "/x")
	r.Host = "bare"
	if p := tbl.Match(r).Forward.Retry; p != nil {
		t.Errorf("policy = %+v, want nil without any retry_policy", p)
	}
}

func TestRetriable(t *testing.T) {
	reset := Outcome{Reset: true}
	connectFailure := Outcome{ConnectFailure: true}
	refused := Outcome{RefusedStream: true}
	status := func(code int) Outcome { return Outcome{Status: code} }

	for _, tc := range []struct {
		retryOn string
		codes   []uint32
		outcome Outcome
		want    bool
	}{
		{"5xx", nil, status(500), true},
		{"5xx", nil, status(503), true},
		{"5xx", nil, status(599), true},
		{"5xx", nil, status(404), false},
		{"5xx", nil, status(200), false},
		{"5xx", nil, reset, true},
		{"5xx", nil, connectFailure, true},
		{"5xx", nil, refused, true},
		{"gateway-error", nil, status(502), true},
		{"gateway-error", nil, status(503), true},
		{"gateway-error", nil, status(504), true},
		{"gateway-error", nil, status(500), false},
		{"gateway-error", nil, reset, true},
		{"reset", nil, reset, true},
		{"reset", nil, connectFailure, true},
		{"reset", nil, status(503), false},
		{"connect-failure", nil, connectFailure, true},
		{"connect-failure", nil, reset, false},
		{"connect-failure", nil, status(503), false},
		{"refused-stream", nil, refused, true},
		{"refused-stream", nil, reset, false},
		{"retriable-4xx", nil, status(409), true},
		{"retriable-4xx", nil, status(404), false},
		{"retriable-status-codes", []uint32{429, 503}, status(429), true},
		{"retriable-status-codes", []uint32{429, 503}, status(500), false},
		{"5xx", []uint32{429}, status(429), false}, // codes need retriable-status-codes
		{"connect-failure,retriable-status-codes", []uint32{503}, status(503), true},
		{"connect-failure,retriable-status-codes", []uint32{503}, connectFailure, true},
		{"unavailable,cancelled", nil, status(503), false}, // gRPC conditions are not understood
		{"5xx", nil, Outcome{}, false},                     // no response and no reason
		{"", nil, status(503), false},
	} {
		p := retryOf(t, &routev3.RetryPolicy{RetryOn: tc.retryOn, RetriableStatusCodes: tc.codes})
		if got := p.Retriable(tc.outcome); got != tc.want {
			t.Errorf("retry_on %q codes %v: Retriable(%+v) = %v, want %v", tc.retryOn, tc.codes, tc.outcome, got, tc.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	p := retryOf(t, &routev3.RetryPolicy{RetryOn: "5xx", RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
		BaseInterval: durationpb.New(25 * time.Millisecond), MaxInterval: durationpb.New(150 * time.Millisecond)}})
	for _, tc := range []struct {
		retry   int
		ceiling time.Duration
	}{
		{-1, 25 * time.Millisecond},
		{0, 25 * time.Millisecond},
		{1, 50 * time.Millisecond},
		{2, 100 * time.Millisecond},
		{3, 150 * time.Millisecond}, // 200ms capped
		{62, 150 * time.Millisecond},
		{1000, 150 * time.Millisecond},
	} {
		var asked int64
		highest := p.Backoff(tc.retry, func(n int64) int64 { asked = n; return n - 1 })
		if highest != tc.ceiling || asked != int64(tc.ceiling)+1 {
			t.Errorf("retry %d: highest back-off %v (rnd asked for [0,%d)), want %v", tc.retry, highest, asked, tc.ceiling)
		}
		if lowest := p.Backoff(tc.retry, func(int64) int64 { return 0 }); lowest != 0 {
			t.Errorf("retry %d: lowest back-off %v, want 0 (full jitter)", tc.retry, lowest)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var sum time.Duration
	const draws = 10_000
	for range draws {
		d := p.Backoff(2, rng.Int64N)
		if d < 0 || d > 100*time.Millisecond {
			t.Fatalf("Backoff(2) = %v, outside [0, 100ms]", d)
		}
		sum += d
	}
	if mean := sum / draws; mean < 45*time.Millisecond || mean > 55*time.Millisecond {
		t.Errorf("mean Backoff(2) = %v, want about 50ms (uniform over [0, 100ms])", mean)
	}
}
