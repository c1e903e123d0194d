package ztunnel

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/ambientmesh/ambient-operator/dataplane/xdsclient"
)

// AdminHandler serves JSON dumps (bound to localhost by default):
// /workloads /services /policies /trustbundles /certs /connections /pods /pool /xds,
// Go profiles under /debug/pprof/, and one action: POST /certs/renew renews every
// certificate now (for operators and tests: normal renewal waits for half life, 12h by
// default) and answers the new serials, 500 if any renewal failed.
func (z *Ztunnel) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /workloads", func(w http.ResponseWriter, _ *http.Request) {
		writeProtos(w, z.Store.Snapshot().Workloads)
	})
	mux.HandleFunc("GET /services", func(w http.ResponseWriter, _ *http.Request) {
		writeProtos(w, z.Store.Snapshot().Services)
	})
	mux.HandleFunc("GET /policies", func(w http.ResponseWriter, _ *http.Request) {
		writeProtos(w, z.Store.Snapshot().Authorizations)
	})
	mux.HandleFunc("GET /trustbundles", func(w http.ResponseWriter, _ *http.Request) {
		writeProtos(w, z.Store.Snapshot().TrustBundles)
	})
	mux.HandleFunc("GET /certs", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, z.Identity.Dump()) })
	// The method in the pattern makes the mux answer 405 (with Allow: POST) to any other.
	mux.HandleFunc("POST /certs/renew", func(w http.ResponseWriter, r *http.Request) {
		renewals := z.Identity.RenewAll(r.Context())
		status := http.StatusOK
		for _, rn := range renewals {
			if rn.Error != "" {
				status = http.StatusInternalServerError
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		writeJSON(w, renewals)
	})
	mux.HandleFunc("GET /connections", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, z.conns.dump()) })
	mux.HandleFunc("GET /pods", func(w http.ResponseWriter, _ *http.Request) {
		type podInfo struct {
			UID, Name, Namespace, ServiceAccount string
		}
		out := []podInfo{}
		for _, p := range z.servedPods() {
			out = append(out, podInfo{p.UID, p.Name, p.Namespace, p.ServiceAccount})
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("GET /pool", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, z.poolStats())
	})
	mux.HandleFunc("GET /xds", func(w http.ResponseWriter, _ *http.Request) {
		var st xdsclient.Stats
		if z.XDS != nil {
			st = z.XDS.Stats()
		}
		writeJSON(w, st)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeProtos encodes messages with protojson (the proto field names), as a JSON array.
func writeProtos[M proto.Message](w http.ResponseWriter, msgs []M) {
	out := make([]json.RawMessage, 0, len(msgs))
	for _, m := range msgs {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		out = append(out, b)
	}
	writeJSON(w, out)
}

// MetricsHandler serves Prometheus metrics, with the bytes of open connections included,
// at /metrics and at /stats/prometheus (where Istio's ztunnel and Envoy serve them, so
// scrape configs written for Istio work unchanged).
func (z *Ztunnel) MetricsHandler() http.Handler {
	prom := promhttp.HandlerFor(z.Metrics.Registry, promhttp.HandlerOpts{})
	scrape := func(w http.ResponseWriter, r *http.Request) {
		z.conns.flush()
		prom.ServeHTTP(w, r)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", scrape)
	mux.HandleFunc("/stats/prometheus", scrape)
	return mux
}

// ReadinessHandler answers /healthz/ready: 200 when Ready, else 503 with the reason.
func (z *Ztunnel) ReadinessHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		if err := z.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}
