package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"
)

// Table is what every command prints: kubectl-style columns for people,
// the raw value for -o json|yaml.
type Table struct {
	Headers []string
	Rows    [][]string
}

// write prints v as json or yaml, or t as a table.
func write(out io.Writer, format string, v any, t Table) error {
	switch format {
	case "json":
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		data, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = out.Write(data)
		return err
	case "table":
		return t.write(out)
	default:
		return fmt.Errorf("-o %q: want table, json or yaml", format)
	}
}

func (t Table) write(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, strings.Join(t.Headers, "\t"))
	for _, r := range t.Rows {
		cells := make([]string, len(r))
		for i, c := range r {
			if c == "" {
				c = "<none>"
			}
			cells[i] = c
		}
		fmt.Fprintln(w, strings.Join(cells, "\t"))
	}
	return w.Flush()
}

// objectTable turns a JSON array of objects into a table: the preferred
// columns that occur, in that order, else every top-level key sorted.
func objectTable(items []map[string]any, preferred []string) Table {
	present := map[string]bool{}
	for _, it := range items {
		for k := range it {
			present[k] = true
		}
	}
	var cols []string
	for _, c := range preferred {
		if present[c] {
			cols = append(cols, c)
		}
	}
	if len(cols) == 0 {
		for k := range present {
			cols = append(cols, k)
		}
		sort.Strings(cols)
	}
	t := Table{}
	for _, c := range cols {
		t.Headers = append(t.Headers, header(c))
	}
	for _, it := range items {
		row := make([]string, len(cols))
		for i, c := range cols {
			row[i] = cell(it[c])
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}

// header is a column name: sourceIdentity and source_identity → SOURCE-IDENTITY.
func header(key string) string {
	var b strings.Builder
	for i, r := range key {
		switch {
		case r == '_':
			b.WriteByte('-')
		case r >= 'A' && r <= 'Z' && i > 0:
			b.WriteByte('-')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return strings.ToUpper(b.String())
}

// cell formats one value: lists joined by commas, objects as compact JSON.
func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		if x == float64(int64(x)) {
			return fmt.Sprintf("%d", int64(x))
		}
		return fmt.Sprintf("%g", x)
	case bool:
		return fmt.Sprintf("%t", x)
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			parts = append(parts, cell(e))
		}
		return strings.Join(parts, ",")
	default:
		data, _ := json.Marshal(x)
		s := string(data)
		if len(s) > 60 {
			s = s[:57] + "..."
		}
		return s
	}
}
