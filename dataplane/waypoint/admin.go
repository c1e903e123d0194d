package waypoint

import (
	"encoding/json"
	"fmt"
	"net/http"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ambientmesh/ambient-operator/dataplane/waypoint/jwt"
)

// ConfigDump is what /config_dump shows: every xDS resource the waypoint holds, as the
// control plane sent it (protobuf JSON), and the state of its xDS stream.
type ConfigDump struct {
	Node      string                      `json:"node"`
	Resources map[string][]DumpedResource `json:"resources"`
	LastNack  string                      `json:"lastNack,omitempty"`
	XDS       any                         `json:"xds,omitempty"`
	JWT       []jwt.ProviderStatus        `json:"jwtProviders,omitempty"`
}

// DumpedResource is one held resource.
type DumpedResource struct {
	Name     string          `json:"name"`
	Version  string          `json:"version"`
	Resource json.RawMessage `json:"resource"`
}

// ConfigDump returns the configuration the waypoint holds.
func (w *Waypoint) ConfigDump() ConfigDump {
	w.store.mu.Lock()
	defer w.store.mu.Unlock()
	out := ConfigDump{Node: NodeCluster(w.cfg.Namespace, w.cfg.Name), Resources: map[string][]DumpedResource{}, LastNack: w.store.lastNack}
	for typeURL, held := range w.store.resources {
		list := make([]DumpedResource, 0, len(held))
		for name, r := range held {
			b, err := protojson.Marshal(r.msg)
			if err != nil {
				b, _ = json.Marshal(err.Error())
			}
			list = append(list, DumpedResource{Name: name, Version: r.version, Resource: b})
		}
		sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
		out.Resources[typeURL] = list
	}
	for _, l := range w.store.compiled {
		if l.http != nil && l.http.jwt != nil {
			out.JWT = append(out.JWT, l.http.jwt.Status()...)
		}
	}
	if w.xds != nil {
		out.XDS = w.xds.Stats()
	}
	return out
}

// AdminHandler serves the localhost admin endpoint: /config_dump (the xDS held, as JSON),
// /clusters (endpoints with health, outlier and circuit-breaker state), /stats (counters
// as "name: value" lines), /stats/prometheus, /certs, /ready, and Go's profiles under
// /debug/pprof/ (see profileHandler).
func (w *Waypoint) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/{name}", profileHandler)
	mux.HandleFunc("GET /config_dump", func(rw http.ResponseWriter, _ *http.Request) { writeJSON(rw, w.ConfigDump()) })
	mux.HandleFunc("GET /clusters", func(rw http.ResponseWriter, _ *http.Request) { writeJSON(rw, w.clusters.Dump()) })
	mux.HandleFunc("GET /stats", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := w.metrics.WriteStats(rw); err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.Handle("GET /stats/prometheus", w.metricsHandler())
	mux.HandleFunc("GET /certs", func(rw http.ResponseWriter, _ *http.Request) {
		if w.identity == nil {
			writeJSON(rw, []any{})
			return
		}
		writeJSON(rw, w.identity.Dump())
	})
	mux.Handle("GET /ready", w.readinessHandler())
	return mux
}

func (w *Waypoint) metricsHandler() http.Handler {
	return promhttp.HandlerFor(w.metrics.Registry(), promhttp.HandlerOpts{})
}

// readinessHandler answers /healthz/ready (the Deployment's readiness probe).
func (w *Waypoint) readinessHandler() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if err := w.Ready(r.Context()); err != nil {
			http.Error(rw, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = rw.Write([]byte("ready\n")) // fails only when the prober is gone
	})
}

// writeJSON answers with v as indented JSON. It marshals v before writing anything, so
// that a value that does not marshal can still be answered with a 500 (as /stats answers
// a failed gather).
func writeJSON(rw http.ResponseWriter, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(rw, err.Error(), http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	_, _ = rw.Write(append(body, '\n')) // fails only when the client is gone
}

// profileHandler serves the Go runtime's profiles of a running waypoint, for latency and
// CPU work (docs/benchmarks.md): /debug/pprof/profile?seconds=N (CPU),
// /debug/pprof/trace?seconds=N (execution trace: goroutine hand-offs, blocking, system
// calls), and the named profiles of runtime/pprof (heap, allocs, goroutine, block,
// mutex, threadcreate; ?debug=1 for text), in the formats of net/http/pprof, which go
// tool pprof and go tool trace read. That package is not imported: it registers itself
// on http.DefaultServeMux and links about twice this code (its index page, symbols).
func profileHandler(rw http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	seconds, err := strconv.Atoi(r.FormValue("seconds"))
	if err != nil || seconds <= 0 {
		seconds = 30
	}
	run := func(start func() error, stop func()) {
		rw.Header().Set("Content-Type", "application/octet-stream")
		if err := start(); err != nil {
			http.Error(rw, err.Error(), http.StatusConflict) // one at a time
			return
		}
		select {
		case <-time.After(time.Duration(seconds) * time.Second):
		case <-r.Context().Done():
		}
		stop()
	}
	switch name {
	case "profile":
		run(func() error { return pprof.StartCPUProfile(rw) }, pprof.StopCPUProfile)
	case "trace":
		run(func() error { return trace.Start(rw) }, trace.Stop)
	default:
		p := pprof.Lookup(name)
		if p == nil {
			http.Error(rw, fmt.Sprintf("no profile %q", name), http.StatusNotFound)
			return
		}
		debug, _ := strconv.Atoi(r.FormValue("debug"))
		if debug == 0 {
			rw.Header().Set("Content-Type", "application/octet-stream")
		} else {
			rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		}
		_ = p.WriteTo(rw, debug) // fails only when the client is gone
	}
}
