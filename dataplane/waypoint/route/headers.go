package route

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// HeaderOps is an ordered list of header mutations: each configuration level
// (weighted cluster, route, virtual host, route configuration) contributes
// one step, and every step first removes its headers, then adds its own.
// Levels run from the most specific to the least, so a less specific
// overwrite wins, unless the route configuration sets
// most_specific_header_mutations_wins, which reverses the order of route,
// virtual host and route configuration (a weighted cluster's step always
// runs first, as in Envoy).
type HeaderOps struct {
	steps []headerStep
}

type headerStep struct {
	remove []string // canonical header keys
	add    []headerAdd
}

type headerAdd struct {
	key       string // canonical header key
	value     string
	action    corev3.HeaderValueOption_HeaderAppendAction
	keepEmpty bool
}

// Apply mutates h; a nil h is left alone.
func (o HeaderOps) Apply(h http.Header) {
	if h == nil {
		return
	}
	for i := range o.steps {
		o.steps[i].apply(h)
	}
}

type addDecision uint8

const (
	skipAdd addDecision = iota
	overwriteHeader
	appendHeader
)

func (s *headerStep) apply(h http.Header) {
	for _, key := range s.remove {
		delete(h, key)
	}
	// Like Envoy, every addition of a step is decided against the headers as
	// they were before the step added anything; then overwrites are done,
	// then appends.
	var small [8]addDecision
	decisions := small[:0]
	for _, a := range s.add {
		decisions = append(decisions, a.decide(h))
	}
	for i, a := range s.add {
		if decisions[i] == overwriteHeader {
			h[a.key] = []string{a.value}
		}
	}
	for i, a := range s.add {
		if decisions[i] == appendHeader {
			h[a.key] = append(h[a.key], a.value)
		}
	}
}

func (a *headerAdd) decide(h http.Header) addDecision {
	if a.value == "" && !a.keepEmpty {
		return skipAdd
	}
	present := len(h[a.key]) > 0
	switch a.action {
	case corev3.HeaderValueOption_ADD_IF_ABSENT:
		if present {
			return skipAdd
		}
		return appendHeader
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
		return overwriteHeader
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
		if !present {
			return skipAdd
		}
		return overwriteHeader
	default: // APPEND_IF_EXISTS_OR_ADD
		return appendHeader
	}
}

// compileHeaderStep turns one level's *_headers_to_add and *_headers_to_remove
// into a step; it returns nil when the level has neither.
func compileHeaderStep(adds []*corev3.HeaderValueOption, removes []string) (*headerStep, error) {
	if len(adds)+len(removes) == 0 {
		return nil, nil
	}
	step := &headerStep{}
	for _, name := range removes {
		if err := checkMutableHeader(name); err != nil {
			return nil, fmt.Errorf("headers_to_remove: %w", err)
		}
		step.remove = append(step.remove, http.CanonicalHeaderKey(name))
	}
	for i, opt := range adds {
		add, err := compileHeaderAdd(opt)
		if err != nil {
			return nil, fmt.Errorf("headers_to_add[%d]: %w", i, err)
		}
		step.add = append(step.add, add)
	}
	return step, nil
}

// headerOpsOf builds HeaderOps from steps in evaluation order, skipping the
// missing ones.
func headerOpsOf(steps ...*headerStep) HeaderOps {
	var ops HeaderOps
	for _, s := range steps {
		if s != nil {
			ops.steps = append(ops.steps, *s)
		}
	}
	return ops
}

func compileHeaderAdd(opt *corev3.HeaderValueOption) (headerAdd, error) {
	name := opt.GetHeader().GetKey()
	if err := checkMutableHeader(name); err != nil {
		return headerAdd{}, err
	}
	raw := opt.GetHeader().GetValue()
	if rawBytes := opt.GetHeader().GetRawValue(); len(rawBytes) > 0 {
		raw = string(rawBytes)
	}
	if strings.ContainsAny(raw, "\x00\r\n") {
		return headerAdd{}, fmt.Errorf("header %q: value contains NUL, CR or LF", name)
	}
	value, err := literalHeaderValue(raw)
	if err != nil {
		return headerAdd{}, fmt.Errorf("header %q: %w", name, err)
	}
	action := opt.GetAppendAction()
	if opt.GetAppend() != nil {
		// The deprecated append flag: true appends, false overwrites.
		if action != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
			return headerAdd{}, fmt.Errorf("header %q: both append and append_action are set", name)
		}
		if !opt.GetAppend().GetValue() {
			action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		}
	}
	return headerAdd{
		key:       http.CanonicalHeaderKey(name),
		value:     value,
		action:    action,
		keepEmpty: opt.GetKeepEmptyValue(),
	}, nil
}

// checkMutableHeader refuses what Envoy refuses to add or remove: pseudo
// headers and Host (host_rewrite_literal is the way to change the latter).
func checkMutableHeader(name string) error {
	if name == "" {
		return errors.New("empty header name")
	}
	if strings.HasPrefix(name, ":") || strings.EqualFold(name, "host") {
		return fmt.Errorf("header %q may not be modified", name)
	}
	return nil
}

// literalHeaderValue resolves Envoy's header value syntax as far as we
// support it: "%%" is a percent sign; any other '%' starts a substitution
// command, which we do not evaluate.
func literalHeaderValue(v string) (string, error) {
	if !strings.Contains(v, "%") {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b.WriteByte(v[i])
			continue
		}
		if i+1 < len(v) && v[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		return "", fmt.Errorf("substitution commands (%q) are not supported; write %%%% for a percent sign", v[i:])
	}
	return b.String(), nil
}
