package route

import (
	"math/rand/v2"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

func httpFault(delay time.Duration, delayPercent *typev3.FractionalPercent, abortStatus uint32, abortPercent *typev3.FractionalPercent) *faultv3.HTTPFault {
	f := &faultv3.HTTPFault{}
	if delay > 0 {
		f.Delay = &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(delay)},
			Percentage:         delayPercent,
		}
	}
	if abortStatus > 0 {
		f.Abort = &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: abortStatus}, Percentage: abortPercent}
	}
	return f
}

func faultFilter(tb testing.TB, f *faultv3.HTTPFault) map[string]*anypb.Any {
	return map[string]*anypb.Any{FaultFilterName: mustAny(tb, f)}
}

func TestFaultCompile(t *testing.T) {
	percent := func(n uint32, d typev3.FractionalPercent_DenominatorType) *typev3.FractionalPercent {
		return &typev3.FractionalPercent{Numerator: n, Denominator: d}
	}
	for _, tc := range []struct {
		name  string
		fault *faultv3.HTTPFault
		want  *Fault
	}{
		{"delay percent", httpFault(2*time.Second, percent(50, typev3.FractionalPercent_HUNDRED), 0, nil),
			&Fault{Delay: 2 * time.Second, DelayPerMillion: 500_000}},
		{"abort per ten thousand", httpFault(0, nil, 503, percent(25, typev3.FractionalPercent_TEN_THOUSAND)),
			&Fault{AbortStatus: 503, AbortPerMillion: 2_500, AbortBody: "fault filter abort"}},
		{"abort per million", httpFault(0, nil, 500, percent(7, typev3.FractionalPercent_MILLION)),
			&Fault{AbortStatus: 500, AbortPerMillion: 7, AbortBody: "fault filter abort"}},
		{"over 100% is capped", httpFault(time.Millisecond, percent(150, typev3.FractionalPercent_HUNDRED), 0, nil),
			&Fault{Delay: time.Millisecond, DelayPerMillion: 1_000_000}},
		{"no percentage is 0%", httpFault(0, nil, 418, nil),
			&Fault{AbortStatus: 418, AbortBody: "fault filter abort"}},
		{"both", httpFault(time.Second, percent(100, typev3.FractionalPercent_HUNDRED), 500, percent(10, typev3.FractionalPercent_HUNDRED)),
			&Fault{Delay: time.Second, DelayPerMillion: 1_000_000, AbortStatus: 500, AbortPerMillion: 100_000, AbortBody: "fault filter abort"}},
		{"empty", &faultv3.HTTPFault{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := routeTo("r", prefixMatch("/"))
			r.TypedPerFilterConfig = faultFilter(t, tc.fault)
			got := mustCompile(t, routeConfig(anyHost(r))).Match(request("GET", "/")).Fault
			if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
				t.Errorf("Fault = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestFaultAbortBody(t *testing.T) {
	f := httpFault(0, nil, 503, &typev3.FractionalPercent{Numerator: 100})
	f.Abort.ResponseBody = "injected"
	r := routeTo("r", prefixMatch("/"))
	r.TypedPerFilterConfig = faultFilter(t, f)
	if got := mustCompile(t, routeConfig(anyHost(r))).Match(request("GET", "/")).Fault.AbortBody; got != "injected" {
		t.Errorf("AbortBody = %q, want %q", got, "injected")
	}
}

func TestFaultLevels(t *testing.T) {
	all := &typev3.FractionalPercent{Numerator: 100}
	own := routeTo("own", exactMatch("/own"))
	own.TypedPerFilterConfig = faultFilter(t, httpFault(0, nil, 500, all))
	disabled := routeTo("disabled", exactMatch("/disabled"))
	disabled.TypedPerFilterConfig = map[string]*anypb.Any{FaultFilterName: mustAny(t, &routev3.FilterConfig{Disabled: true})}
	wrapped := routeTo("wrapped", exactMatch("/wrapped"))
	wrapped.TypedPerFilterConfig = map[string]*anypb.Any{FaultFilterName: mustAny(t,
		&routev3.FilterConfig{Config: mustAny(t, httpFault(0, nil, 502, all))})}
	vh := anyHost(own, disabled, wrapped, routeTo("inherits", prefixMatch("/")))
	vh.TypedPerFilterConfig = faultFilter(t, httpFault(0, nil, 503, all))
	rc := routeConfig(vh, vhost("other", []string{"other"}, routeTo("global", prefixMatch("/"))))
	rc.TypedPerFilterConfig = faultFilter(t, httpFault(0, nil, 504, all))
	tbl := mustCompile(t, rc)

	for _, tc := range []struct {
		host, path string
		want       int // abort status, 0 for no fault
	}{
		{"svc", "/own", 500},
		{"svc", "/disabled", 0},
		{"svc", "/wrapped", 502},
		{"svc", "/x", 503},
		{"other", "/x", 504},
	} {
		r := request("GET", tc.path)
		r.Host = tc.host
		f := tbl.Match(r).Fault
		got := 0
		if f != nil {
			got = f.AbortStatus
		}
		if got != tc.want {
			t.Errorf("%s%s: abort status %d, want %d", tc.host, tc.path, got, tc.want)
		}
	}
}

func TestFaultDecide(t *testing.T) {
	for _, tc := range []struct {
		percent          uint32
		wantLow, wantTop float64 // share of requests faulted, in percent
	}{
		{0, 0, 0},
		{50, 49, 51},
		{100, 100, 100},
	} {
		p := &typev3.FractionalPercent{Numerator: tc.percent}
		r := routeTo("r", prefixMatch("/"))
		r.TypedPerFilterConfig = faultFilter(t, httpFault(time.Second, p, 503, p))
		f := mustCompile(t, routeConfig(anyHost(r))).Match(request("GET", "/")).Fault
		rng := rand.New(rand.NewPCG(5, 6))
		const draws = 100_000
		delayed, aborted := 0, 0
		for range draws {
			delay, status := f.Decide(func(n uint32) uint32 {
				if n != 1_000_000 {
					t.Fatalf("rnd called with n = %d, want 1,000,000", n)
				}
				return rng.Uint32N(n)
			})
			if delay != 0 {
				if delay != time.Second {
					t.Fatalf("delay = %v, want 1s", delay)
				}
				delayed++
			}
			if status != 0 {
				if status != 503 {
					t.Fatalf("abort status = %d, want 503", status)
				}
				aborted++
			}
		}
		for kind, n := range map[string]int{"delayed": delayed, "aborted": aborted} {
			if share := 100 * float64(n) / draws; share < tc.wantLow || share > tc.wantTop {
				t.Errorf("%d%%: %.2f%% %s, want [%v, %v]", tc.percent, share, kind, tc.wantLow, tc.wantTop)
			}
		}
	}
}

// TestFaultDecideEdges checks the boundaries of the draw: a fault at n per
// million hits draws 0..n-1 only.
func TestFaultDecideEdges(t *testing.T) {
	f := &Fault{Delay: time.Second, DelayPerMillion: 10, AbortStatus: 500, AbortPerMillion: 10}
	if d, s := f.Decide(func(uint32) uint32 { return 9 }); d != time.Second || s != 500 {
		t.Errorf("draw 9 of 10 per million: %v %d, want both faults", d, s)
	}
	if d, s := f.Decide(func(uint32) uint32 { return 10 }); d != 0 || s != 0 {
		t.Errorf("draw 10 of 10 per million: %v %d, want no fault", d, s)
	}
}
