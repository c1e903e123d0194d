package rbac

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/ambientmesh/ambient-operator/internal/ascii"
)

// compileString compiles an Envoy StringMatcher. ignore_case folds ASCII
// only, like Envoy, and does not apply to safe_regex.
func compileString(m *matcherv3.StringMatcher) (func(string) bool, error) {
	ignoreCase := m.GetIgnoreCase()
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		want := p.Exact
		if ignoreCase {
			return func(s string) bool { return ascii.EqualFold(s, want) }, nil
		}
		return func(s string) bool { return s == want }, nil
	case *matcherv3.StringMatcher_Prefix:
		want := p.Prefix
		if ignoreCase {
			return func(s string) bool { return ascii.HasPrefixFold(s, want) }, nil
		}
		return func(s string) bool { return strings.HasPrefix(s, want) }, nil
	case *matcherv3.StringMatcher_Suffix:
		want := p.Suffix
		if ignoreCase {
			return func(s string) bool { return len(s) >= len(want) && ascii.EqualFold(s[len(s)-len(want):], want) }, nil
		}
		return func(s string) bool { return strings.HasSuffix(s, want) }, nil
	case *matcherv3.StringMatcher_Contains:
		want := p.Contains
		if ignoreCase {
			want = ascii.ToLower(want)
			return func(s string) bool { return strings.Contains(ascii.ToLower(s), want) }, nil
		}
		return func(s string) bool { return strings.Contains(s, want) }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		return compileRegex(p.SafeRegex)
	default:
		return nil, fmt.Errorf("string matcher %s is not supported", oneofName(m, "match_pattern"))
	}
}

// compileRegex compiles a regex that must match the whole value, as RE2's
// FullMatch does in Envoy.
func compileRegex(r *matcherv3.RegexMatcher) (func(string) bool, error) {
	// Compiling the regex alone first proves it is balanced, so wrapping it
	// cannot change its meaning (think "a)|(b").
	if _, err := regexp.Compile(r.GetRegex()); err != nil {
		return nil, fmt.Errorf("safe_regex: %w", err)
	}
	re, err := regexp.Compile(`^(?:` + r.GetRegex() + `)$`)
	if err != nil {
		return nil, fmt.Errorf("safe_regex: %w", err)
	}
	return re.MatchString, nil
}

// compileHeader compiles an Envoy HeaderMatcher with Envoy's rules for
// absent headers: an absent header matches only a presence check that asks
// for absence (present_match: false, or present_match: true inverted);
// invert_match does not turn other mismatches on an absent header into
// matches, unless treat_missing_header_as_empty makes it an empty value.
func compileHeader(h *routev3.HeaderMatcher) (predicate, error) {
	get, err := headerGetter(strings.ToLower(h.GetName()))
	if err != nil {
		return nil, err
	}
	isPresenceCheck, wantPresent := false, false
	var matchValue func(string) bool
	switch spec := h.GetHeaderMatchSpecifier().(type) {
	case nil: // no specifier: the header must be present
		isPresenceCheck, wantPresent = true, true
	case *routev3.HeaderMatcher_PresentMatch:
		isPresenceCheck, wantPresent = true, spec.PresentMatch
	case *routev3.HeaderMatcher_ExactMatch:
		// An empty (deprecated) exact_match matches any value in Envoy.
		want := spec.ExactMatch
		matchValue = func(s string) bool { return want == "" || s == want }
	case *routev3.HeaderMatcher_SafeRegexMatch:
		if matchValue, err = compileRegex(spec.SafeRegexMatch); err != nil {
			return nil, fmt.Errorf("header %q: %w", h.GetName(), err)
		}
	case *routev3.HeaderMatcher_RangeMatch:
		start, end := spec.RangeMatch.GetStart(), spec.RangeMatch.GetEnd()
		matchValue = func(s string) bool {
			n, err := strconv.ParseInt(s, 10, 64)
			return err == nil && n >= start && n < end
		}
	case *routev3.HeaderMatcher_PrefixMatch:
		want := spec.PrefixMatch
		matchValue = func(s string) bool { return strings.HasPrefix(s, want) }
	case *routev3.HeaderMatcher_SuffixMatch:
		want := spec.SuffixMatch
		matchValue = func(s string) bool { return strings.HasSuffix(s, want) }
	case *routev3.HeaderMatcher_ContainsMatch:
		want := spec.ContainsMatch
		matchValue = func(s string) bool { return strings.Contains(s, want) }
	case *routev3.HeaderMatcher_StringMatch:
		if matchValue, err = compileString(spec.StringMatch); err != nil {
			return nil, fmt.Errorf("header %q: %w", h.GetName(), err)
		}
	default:
		return nil, fmt.Errorf("header %q: %s is not supported", h.GetName(), oneofName(h, "header_match_specifier"))
	}
	if isPresenceCheck {
		matchValue = func(string) bool { return wantPresent }
	}
	invert, missingAsEmpty := h.GetInvertMatch(), h.GetTreatMissingHeaderAsEmpty()
	return func(a *Attributes) bool {
		value, present := get(a)
		if !present && !missingAsEmpty {
			return isPresenceCheck && wantPresent == invert
		}
		return matchValue(value) != invert
	}, nil
}

// headerGetter returns how to read a (lower-case) header name from the
// attributes: pseudo-headers from their fields, others from Header with
// multiple values joined by "," as Envoy does.
func headerGetter(name string) (func(*Attributes) (string, bool), error) {
	switch name {
	case ":method":
		return func(a *Attributes) (string, bool) { return a.Method, a.Method != "" }, nil
	case ":authority", "host": // Envoy keeps HTTP/1 Host as :authority, and "host" names it too
		return func(a *Attributes) (string, bool) { return a.Host, a.Host != "" }, nil
	case ":path":
		return func(a *Attributes) (string, bool) { return a.Path, a.Path != "" }, nil
	case ":scheme":
		return func(a *Attributes) (string, bool) { return a.Scheme, a.Scheme != "" }, nil
	}
	if strings.HasPrefix(name, ":") {
		return nil, fmt.Errorf("header %q: pseudo-header is not supported", name)
	}
	key := textproto.CanonicalMIMEHeaderKey(name)
	return func(a *Attributes) (string, bool) {
		values := a.Header[key]
		switch len(values) {
		case 0:
			return "", false
		case 1:
			return values[0], true
		default:
			return strings.Join(values, ","), true
		}
	}, nil
}

// compilePath compiles a PathMatcher, which sees :path without its query
// and fragment.
func compilePath(pm *matcherv3.PathMatcher) (predicate, error) {
	match, err := compileString(pm.GetPath())
	if err != nil {
		return nil, fmt.Errorf("url_path: %w", err)
	}
	return func(a *Attributes) bool {
		if a.Path == "" {
			return false
		}
		path := a.Path
		if i := strings.IndexAny(path, "?#"); i >= 0 {
			path = path[:i]
		}
		return match(path)
	}, nil
}

// compileCIDR compiles a CidrRange matched against the address addrOf picks.
func compileCIDR(r *corev3.CidrRange, addrOf func(*Attributes) netip.Addr) (predicate, error) {
	addr, err := netip.ParseAddr(r.GetAddressPrefix())
	if err != nil {
		return nil, fmt.Errorf("cidr: %w", err)
	}
	bits := int(r.GetPrefixLen().GetValue()) // unset: 0, as in Envoy
	if addr.Is4In6() && bits >= 96 {
		addr, bits = addr.Unmap(), bits-96
	}
	prefix, err := addr.Prefix(bits)
	if err != nil {
		return nil, fmt.Errorf("cidr %s/%d: %w", r.GetAddressPrefix(), r.GetPrefixLen().GetValue(), err)
	}
	return func(a *Attributes) bool {
		return prefix.Contains(addrOf(a).WithZone("").Unmap())
	}, nil
}

// valueMatcher matches a metadata value; present is false when the path led
// nowhere (v is then nil), true for a JSON null.
type valueMatcher func(v any, present bool) bool

// compileMetadata compiles a MetadataMatcher against dynamic metadata.
func compileMetadata(m *matcherv3.MetadataMatcher) (predicate, error) {
	filter := m.GetFilter()
	path := make([]string, 0, len(m.GetPath()))
	for i, seg := range m.GetPath() {
		key, ok := seg.GetSegment().(*matcherv3.MetadataMatcher_PathSegment_Key)
		if !ok {
			return nil, fmt.Errorf("metadata %q: path[%d] has no key", filter, i)
		}
		path = append(path, key.Key)
	}
	match, err := compileValue(m.GetValue())
	if err != nil {
		return nil, fmt.Errorf("metadata %q: %w", filter, err)
	}
	invert := m.GetInvert()
	return func(a *Attributes) bool {
		v, present := lookupMetadata(a.Metadata, filter, path)
		return match(v, present) != invert
	}, nil
}

// lookupMetadata follows path through nested objects of one filter's
// metadata.
func lookupMetadata(md map[string]map[string]any, filter string, path []string) (any, bool) {
	fields, ok := md[filter]
	if !ok || len(path) == 0 {
		return nil, false
	}
	var v any
	for _, key := range path {
		if v, ok = fields[key]; !ok {
			return nil, false
		}
		fields, _ = v.(map[string]any) // nil when v is no object: any further key is absent
	}
	return v, true
}

func compileValue(m *matcherv3.ValueMatcher) (valueMatcher, error) {
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_NullMatch_:
		return func(v any, present bool) bool { return present && v == nil }, nil
	case *matcherv3.ValueMatcher_DoubleMatch:
		match, err := compileDouble(p.DoubleMatch)
		if err != nil {
			return nil, err
		}
		return func(v any, _ bool) bool {
			n, ok := number(v)
			return ok && match(n)
		}, nil
	case *matcherv3.ValueMatcher_StringMatch:
		match, err := compileString(p.StringMatch)
		if err != nil {
			return nil, err
		}
		return func(v any, _ bool) bool {
			s, ok := v.(string)
			return ok && match(s)
		}, nil
	case *matcherv3.ValueMatcher_BoolMatch:
		want := p.BoolMatch
		return func(v any, _ bool) bool {
			b, ok := v.(bool)
			return ok && b == want
		}, nil
	case *matcherv3.ValueMatcher_PresentMatch:
		// As in Envoy, present_match: false never matches; absence is
		// matched with invert.
		want := p.PresentMatch
		return func(_ any, present bool) bool { return want && present }, nil
	case *matcherv3.ValueMatcher_ListMatch:
		element, err := compileValue(p.ListMatch.GetOneOf())
		if err != nil {
			return nil, fmt.Errorf("list_match: %w", err)
		}
		return func(v any, _ bool) bool {
			list, _ := v.([]any)
			for _, e := range list {
				if element(e, true) {
					return true
				}
			}
			return false
		}, nil
	case *matcherv3.ValueMatcher_OrMatch:
		var alternatives []valueMatcher
		for i, vm := range p.OrMatch.GetValueMatchers() {
			alt, err := compileValue(vm)
			if err != nil {
				return nil, fmt.Errorf("or_match[%d]: %w", i, err)
			}
			alternatives = append(alternatives, alt)
		}
		return func(v any, present bool) bool {
			for _, alt := range alternatives {
				if alt(v, present) {
					return true
				}
			}
			return false
		}, nil
	default:
		return nil, fmt.Errorf("value matcher %s is not supported", oneofName(m, "match_pattern"))
	}
}

func compileDouble(m *matcherv3.DoubleMatcher) (func(float64) bool, error) {
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.DoubleMatcher_Range:
		start, end := p.Range.GetStart(), p.Range.GetEnd()
		return func(n float64) bool { return n >= start && n < end }, nil
	case *matcherv3.DoubleMatcher_Exact:
		want := p.Exact
		return func(n float64) bool { return n == want }, nil
	default:
		return nil, fmt.Errorf("double_match %s is not supported", oneofName(m, "match_pattern"))
	}
}

// number reads a JSON number as encoding/json decodes it.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	default:
		return 0, false
	}
}
