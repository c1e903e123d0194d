package waypoint

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Fault injection is set with annotations on an HTTPRoute or GRPCRoute and applies to
// every rule of it. Gateway API has no fault filter; an annotation keeps the route a
// plain Gateway API object (no extension CRD to install or reference), and faults are a
// testing tool that belongs next to the route it tests.
const (
	// AnnotationFaultAbort answers a share of requests with a status code instead of
	// forwarding them: "<status>[:<percent>]", e.g. "503:50" (percent defaults to 100).
	AnnotationFaultAbort = "ambientmesh.dev/fault-abort"
	// AnnotationFaultDelay delays a share of requests before forwarding them:
	// "<duration>[:<percent>]", e.g. "2s:10".
	AnnotationFaultDelay = "ambientmesh.dev/fault-delay"
)

// faultSpec is a route's parsed fault annotations.
type faultSpec struct {
	abortStatus  uint32
	abortPercent *typev3.FractionalPercent
	delay        time.Duration
	delayPercent *typev3.FractionalPercent
}

// parseFaultAnnotations reads the fault annotations; nil when there are none.
func parseFaultAnnotations(annotations map[string]string) (*faultSpec, error) {
	abort, hasAbort := annotations[AnnotationFaultAbort]
	delay, hasDelay := annotations[AnnotationFaultDelay]
	if !hasAbort && !hasDelay {
		return nil, nil
	}
	f := &faultSpec{}
	if hasAbort {
		value, percent, err := splitPercent(abort)
		if err == nil {
			var status int
			status, err = strconv.Atoi(value)
			if err == nil && (status < 200 || status > 599) {
				err = fmt.Errorf("status %d is not in 200-599", status)
			}
			f.abortStatus, f.abortPercent = uint32(status), percent
		}
		if err != nil {
			return nil, fmt.Errorf("annotation %s: %q: %v (want \"<status>[:<percent>]\", e.g. \"503:50\")", AnnotationFaultAbort, abort, err)
		}
	}
	if hasDelay {
		value, percent, err := splitPercent(delay)
		if err == nil {
			f.delay, err = time.ParseDuration(value)
			if err == nil && f.delay <= 0 {
				err = fmt.Errorf("delay must be positive")
			}
			f.delayPercent = percent
		}
		if err != nil {
			return nil, fmt.Errorf("annotation %s: %q: %v (want \"<duration>[:<percent>]\", e.g. \"2s:10\")", AnnotationFaultDelay, delay, err)
		}
	}
	return f, nil
}

// splitPercent splits "<value>[:<percent>]"; the percent (0-100, up to 4 decimals) is in
// millionths so that 0.5% is exact.
func splitPercent(s string) (string, *typev3.FractionalPercent, error) {
	value, pct, hasPct := strings.Cut(strings.TrimSpace(s), ":")
	if !hasPct {
		return value, &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}, nil
	}
	p, err := strconv.ParseFloat(pct, 64)
	if err != nil || p < 0 || p > 100 {
		return "", nil, fmt.Errorf("percent %q is not a number from 0 to 100", pct)
	}
	return value, &typev3.FractionalPercent{Numerator: uint32(p*10_000 + 0.5), Denominator: typev3.FractionalPercent_MILLION}, nil
}

// config is the fault filter's per-route config.
func (f *faultSpec) config() *faultv3.HTTPFault {
	out := &faultv3.HTTPFault{}
	if f.abortStatus != 0 {
		out.Abort = &faultv3.FaultAbort{
			ErrorType:  &faultv3.FaultAbort_HttpStatus{HttpStatus: f.abortStatus},
			Percentage: f.abortPercent,
		}
	}
	if f.delay > 0 {
		out.Delay = &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(f.delay)},
			Percentage:         f.delayPercent,
		}
	}
	return out
}
