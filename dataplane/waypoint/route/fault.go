package route

import (
	"fmt"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// FaultFilterName is the typed_per_filter_config key of the fault filter.
const FaultFilterName = "envoy.filters.http.fault"

// perMillion is the scale of every fraction in this package.
const perMillion = 1_000_000

// Fault is the fault filter's configuration for a route: delay some requests,
// abort some. A zero Delay or AbortStatus means that kind is not configured.
type Fault struct {
	Delay           time.Duration
	DelayPerMillion uint32

	AbortStatus     int
	AbortPerMillion uint32
	AbortBody       string // Envoy's "fault filter abort" unless configured
}

// Decide draws whether this request is delayed and whether it is aborted
// (both may happen: delay first, then abort). rnd(n) must return a number in
// [0, n); it is called with n = 1,000,000 once per configured kind.
func (f *Fault) Decide(rnd func(n uint32) uint32) (delay time.Duration, abortStatus int) {
	if f.Delay > 0 && rnd(perMillion) < f.DelayPerMillion {
		delay = f.Delay
	}
	if f.AbortStatus != 0 && rnd(perMillion) < f.AbortPerMillion {
		abortStatus = f.AbortStatus
	}
	return delay, abortStatus
}

// compileFault reads a fault filter per-route config, bare or inside a
// FilterConfig; it returns nil for a disabled filter or an empty config.
func compileFault(cfg *anypb.Any) (*Fault, error) {
	const where = "typed_per_filter_config[" + FaultFilterName + "]"
	if cfg.MessageIs(&routev3.FilterConfig{}) {
		wrapper := &routev3.FilterConfig{}
		if err := cfg.UnmarshalTo(wrapper); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if err := wrapper.ValidateAll(); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if err := checkFields(wrapper, where, filterConfigFields); err != nil {
			return nil, err
		}
		if wrapper.GetDisabled() || wrapper.GetConfig() == nil {
			return nil, nil
		}
		cfg = wrapper.GetConfig()
	}
	hf := &faultv3.HTTPFault{}
	if !cfg.MessageIs(hf) {
		return nil, fmt.Errorf("%s: type %s is not %s", where, cfg.GetTypeUrl(), hf.ProtoReflect().Descriptor().FullName())
	}
	if err := cfg.UnmarshalTo(hf); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if err := hf.ValidateAll(); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if err := checkFields(hf, where, httpFaultFields); err != nil {
		return nil, err
	}
	f := &Fault{}
	if d := hf.GetDelay(); d != nil {
		if err := checkFields(d, where+".delay", faultDelayFields); err != nil {
			return nil, err
		}
		delay, err := duration(d.GetFixedDelay(), where+".delay.fixed_delay")
		if err != nil {
			return nil, err
		}
		f.Delay, f.DelayPerMillion = delay, fractionPerMillion(d.GetPercentage())
	}
	if a := hf.GetAbort(); a != nil {
		if err := checkFields(a, where+".abort", faultAbortFields); err != nil {
			return nil, err
		}
		f.AbortStatus = int(a.GetHttpStatus())
		f.AbortPerMillion = fractionPerMillion(a.GetPercentage())
		f.AbortBody = a.GetResponseBody()
		if f.AbortBody == "" {
			f.AbortBody = "fault filter abort"
		}
	}
	if f.Delay == 0 && f.AbortStatus == 0 {
		return nil, nil
	}
	return f, nil
}

// fractionPerMillion converts a FractionalPercent (nil: 0%) to parts per
// million, capped at 100%.
func fractionPerMillion(p *typev3.FractionalPercent) uint32 {
	n := uint64(p.GetNumerator())
	switch p.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		n *= perMillion / 100
	case typev3.FractionalPercent_TEN_THOUSAND:
		n *= perMillion / 10_000
	}
	return uint32(min(n, perMillion))
}
