package deploy

import (
	"errors"
	"fmt"
	"strings"
)

// A small PromQL reader for the dashboard check: it finds the vector selectors
// (metric names and label matchers) and the label names of grouping clauses
// (by, without, on, ignoring, group_left, group_right) of an expression. It is not
// a parser: it does not check that the expression is valid PromQL, only reads the
// names in it. Range and offset durations and Grafana variables ($__rate_interval)
// are skipped.

type promMatcher struct{ name, op, value string }

type promSelector struct {
	metric   string
	matchers []promMatcher
}

type promReferences struct {
	selectors []promSelector
	grouping  []string
}

type promToken struct {
	kind string // "ident", "string", "number", "op"
	text string
}

// groupingKeywords take a parenthesised list of label names.
var groupingKeywords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// binaryKeywords are operators and modifiers spelled as words.
var binaryKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true}

func promRefs(expr string) (promReferences, error) {
	toks, err := promTokens(expr)
	if err != nil {
		return promReferences{}, err
	}
	var refs promReferences
	for i := 0; i < len(toks); i++ {
		tok := toks[i]
		next := func(k int) promToken {
			if i+k < len(toks) {
				return toks[i+k]
			}
			return promToken{}
		}
		switch {
		case tok.kind == "ident" && groupingKeywords[tok.text]:
			if next(1).text != "(" {
				// group_left and group_right may stand alone.
				continue
			}
			i += 2
			for ; i < len(toks) && toks[i].text != ")"; i++ {
				if toks[i].kind == "ident" {
					refs.grouping = append(refs.grouping, toks[i].text)
				} else if toks[i].text != "," {
					return promReferences{}, fmt.Errorf("%q in a label list", toks[i].text)
				}
			}
		case tok.kind == "ident" && (next(1).text == "(" || next(1).text == "by" || next(1).text == "without"):
			// A function or aggregation (sum by (...) (...)): its arguments follow.
		case tok.kind == "ident" && binaryKeywords[tok.text]:
		case tok.kind == "ident":
			sel := promSelector{metric: tok.text}
			if next(1).text == "{" {
				i++
				if sel.matchers, i, err = promMatchers(toks, i); err != nil {
					return promReferences{}, err
				}
			}
			refs.selectors = append(refs.selectors, sel)
		case tok.text == "{":
			return promReferences{}, errors.New("a selector without a metric name")
		}
	}
	return refs, nil
}

// promMatchers reads the matchers of the selector whose "{" is toks[open] and returns
// them with the index of its "}".
func promMatchers(toks []promToken, open int) ([]promMatcher, int, error) {
	var ms []promMatcher
	i := open + 1
	for i < len(toks) && toks[i].text != "}" {
		if i+2 >= len(toks) || toks[i].kind != "ident" || toks[i+1].kind != "op" || toks[i+2].kind != "string" {
			return nil, 0, fmt.Errorf("label matcher expected at %q", toks[i].text)
		}
		switch op := toks[i+1].text; op {
		case "=", "!=", "=~", "!~":
			ms = append(ms, promMatcher{name: toks[i].text, op: op, value: toks[i+2].text})
		default:
			return nil, 0, fmt.Errorf("label matcher with operator %q", op)
		}
		i += 3
		if i < len(toks) && toks[i].text == "," {
			i++
		}
	}
	if i >= len(toks) {
		return nil, 0, errors.New("unterminated selector")
	}
	return ms, i, nil
}

func promTokens(expr string) ([]promToken, error) {
	var toks []promToken
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdentChar := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '"' || c == '\'' || c == '`':
			var b strings.Builder
			j := i + 1
			for ; j < len(expr) && expr[j] != c; j++ {
				if expr[j] == '\\' && c != '`' && j+1 < len(expr) {
					j++
				}
				b.WriteByte(expr[j])
			}
			if j >= len(expr) {
				return nil, errors.New("unterminated string")
			}
			toks = append(toks, promToken{"string", b.String()})
			i = j + 1
		case c == '[':
			// A range or subquery: durations and Grafana variables only.
			j := strings.IndexByte(expr[i:], ']')
			if j < 0 {
				return nil, errors.New("unterminated range")
			}
			i += j + 1
		case c == '$':
			// A Grafana variable outside a string: $name or ${name}.
			j := i + 1
			if j < len(expr) && expr[j] == '{' {
				k := strings.IndexByte(expr[j:], '}')
				if k < 0 {
					return nil, errors.New("unterminated variable")
				}
				j += k + 1
			}
			for j < len(expr) && isIdentChar(expr[j]) {
				j++
			}
			i = j
		case isIdentStart(c):
			j := i
			for j < len(expr) && isIdentChar(expr[j]) {
				j++
			}
			toks = append(toks, promToken{"ident", expr[i:j]})
			i = j
		case c >= '0' && c <= '9' || c == '.':
			// Numbers and durations (0.99, 1e3, 5m).
			j := i
			for j < len(expr) && (isIdentChar(expr[j]) || expr[j] == '.') {
				j++
			}
			toks = append(toks, promToken{"number", expr[i:j]})
			i = j
		default:
			op := string(c)
			if i+1 < len(expr) {
				switch two := expr[i : i+2]; two {
				case "=~", "!~", "!=", "==", ">=", "<=":
					op = two
				}
			}
			kind := "op"
			if strings.Contains("(){},", op) {
				kind = "punct"
			}
			toks = append(toks, promToken{kind, op})
			i += len(op)
		}
	}
	return toks, nil
}
