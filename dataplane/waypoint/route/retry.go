package route

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// RetryPolicy says when and how often a failed try is repeated.
type RetryPolicy struct {
	// NumRetries is the number of retries after the first try (Envoy's
	// default: 1).
	NumRetries int
	// PerTryTimeout bounds each try; 0 leaves only the route's Timeout.
	PerTryTimeout time.Duration
	// Back-off between tries: 25ms and ten times the base unless configured.
	BaseInterval, MaxInterval time.Duration
	// RetriableStatusCodes are retried under "retriable-status-codes".
	RetriableStatusCodes []int

	on retryConditions
}

// retryConditions is the set of understood retry_on conditions.
type retryConditions uint8

const (
	retryOn5xx retryConditions = 1 << iota
	retryOnGatewayError
	retryOnReset
	retryOnConnectFailure
	retryOnRefusedStream
	retryOnRetriable4xx
	retryOnRetriableStatusCodes
)

var retryConditionNames = map[string]retryConditions{
	"5xx":                    retryOn5xx,
	"gateway-error":          retryOnGatewayError,
	"reset":                  retryOnReset,
	"connect-failure":        retryOnConnectFailure,
	"refused-stream":         retryOnRefusedStream,
	"retriable-4xx":          retryOnRetriable4xx,
	"retriable-status-codes": retryOnRetriableStatusCodes,
}

const (
	defaultBaseInterval = 25 * time.Millisecond
	defaultRetries      = 1
)

// Outcome is what one try produced: a response status, or no response
// (Status 0) because the connection failed, the stream was refused, or it
// was reset. A try that ran out of its per-try timeout counts as Reset, as
// in Envoy.
type Outcome struct {
	Status         int
	Reset          bool
	ConnectFailure bool
	RefusedStream  bool
}

// Retriable reports whether the policy retries after o. It does not count
// tries: the caller stops after NumRetries retries.
func (p *RetryPolicy) Retriable(o Outcome) bool {
	if o.Status == 0 {
		switch {
		case !o.Reset && !o.ConnectFailure && !o.RefusedStream:
			return false
		case p.on&(retryOn5xx|retryOnGatewayError|retryOnReset) != 0:
			// Envoy counts any missing response as a 5xx.
			return true
		case o.ConnectFailure && p.on&retryOnConnectFailure != 0:
			return true
		case o.RefusedStream && p.on&retryOnRefusedStream != 0:
			return true
		}
		return false
	}
	switch {
	case p.on&retryOn5xx != 0 && o.Status >= 500 && o.Status <= 599:
		return true
	case p.on&retryOnGatewayError != 0 && (o.Status == 502 || o.Status == 503 || o.Status == 504):
		return true
	case p.on&retryOnRetriable4xx != 0 && o.Status == 409:
		return true
	case p.on&retryOnRetriableStatusCodes != 0 && slices.Contains(p.RetriableStatusCodes, o.Status):
		return true
	}
	return false
}

// Backoff is the wait before retry number retry (0 for the first retry):
// fully jittered exponential back-off, uniform in
// [0, min(BaseInterval·2^retry, MaxInterval)]. rnd(n) must return a number in
// [0, n), for example rand.Int64N.
func (p *RetryPolicy) Backoff(retry int, rnd func(n int64) int64) time.Duration {
	retry = max(retry, 0)
	ceiling := p.MaxInterval
	if retry < 63 && p.BaseInterval <= p.MaxInterval>>retry {
		ceiling = p.BaseInterval << retry
	}
	n := int64(ceiling)
	if n < math.MaxInt64 {
		n++ // make the ceiling itself reachable
	}
	if n <= 0 {
		return 0
	}
	return time.Duration(rnd(n))
}

func compileRetryPolicy(rp *routev3.RetryPolicy) (*RetryPolicy, error) {
	if err := checkFields(rp, "retry_policy", retryPolicyFields); err != nil {
		return nil, err
	}
	p := &RetryPolicy{NumRetries: defaultRetries, BaseInterval: defaultBaseInterval}
	if n := rp.GetNumRetries(); n != nil {
		p.NumRetries = int(n.GetValue())
	}
	var err error
	if p.PerTryTimeout, err = duration(rp.GetPerTryTimeout(), "retry_policy.per_try_timeout"); err != nil {
		return nil, err
	}
	if bo := rp.GetRetryBackOff(); bo != nil {
		if p.BaseInterval, err = duration(bo.GetBaseInterval(), "retry_policy.retry_back_off.base_interval"); err != nil {
			return nil, err
		}
		if p.MaxInterval, err = duration(bo.GetMaxInterval(), "retry_policy.retry_back_off.max_interval"); err != nil {
			return nil, err
		}
	}
	if p.MaxInterval == 0 {
		p.MaxInterval = 10 * p.BaseInterval
	}
	if p.MaxInterval < p.BaseInterval {
		return nil, fmt.Errorf("retry_policy.retry_back_off: max_interval %v is less than base_interval %v", p.MaxInterval, p.BaseInterval)
	}
	for _, code := range rp.GetRetriableStatusCodes() {
		p.RetriableStatusCodes = append(p.RetriableStatusCodes, int(code))
	}
	for cond := range strings.SplitSeq(rp.GetRetryOn(), ",") {
		// Conditions we do not know are ignored (see the package doc).
		p.on |= retryConditionNames[strings.TrimSpace(cond)]
	}
	return p, nil
}
