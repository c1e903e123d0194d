package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ambientmesh/ambient-operator/dataplane/cni/wire"
	"github.com/ambientmesh/ambient-operator/internal/unixsock"
)

// CNIServer answers the plugin on a unix socket: it decides enrollment for
// the pod being created and, for an enrolled pod, captures it before
// answering, so the pod's containers start with capture in place.
type CNIServer struct {
	Enroller *Enroller
	// Cache is the agent's informer-backed reader; Live reads the apiserver
	// for a pod the cache has not seen yet.
	Cache client.Reader
	Live  client.Reader
	Log   logr.Logger
	// RequestTimeout bounds the work for one request (default 8s, under the
	// plugin's default 10s, so the plugin gets an answer, not a timeout).
	RequestTimeout time.Duration
	// OnEnrolled, when set, is called after a pod was captured (the
	// controller annotates it).
	OnEnrolled func(namespace, name string)
	// ProcRoot is where the agent sees the host's /proc (empty: /proc): the
	// runtime's /proc/<pid>/ns/net names a pid of the host, not of the
	// agent's container.
	ProcRoot string
}

// Serve listens on socketPath until ctx ends. The socket is root's only
// (the container runtime runs the plugin as root; so does the agent): mode
// 0600 from the moment it appears, and a connection whose peer is neither
// root nor the agent's own user (SO_PEERCRED) is closed unanswered.
func (s *CNIServer) Serve(ctx context.Context, socketPath string) error {
	if err := os.MkdirAll(filepath.Dir(socketPath), 0o755); err != nil {
		return err
	}
	ul, err := unixsock.Listen("unix", socketPath)
	if err != nil {
		return err
	}
	ln := &unixsock.Listener{UnixListener: ul, Refused: func(err error) {
		s.Enroller.Metrics.Failures.WithLabelValues("cni_peer").Inc()
		s.Log.Error(err, "CNI socket connection refused")
	}}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *CNIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != wire.Path {
		http.Error(w, "POST "+wire.Path+" only", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, wire.MaxMessageSize))
	if err != nil {
		http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	req, err := wire.DecodeRequest(body)
	if err != nil {
		s.Enroller.Metrics.Failures.WithLabelValues("cni_request").Inc()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	timeout := s.RequestTimeout
	if timeout == 0 {
		timeout = 8 * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	resp, err := s.handle(ctx, req)
	if err != nil {
		// Not an answer about the pod (e.g. apiserver unreachable): the
		// plugin falls back to the enrollment state file.
		s.Log.Error(err, "cannot answer CNI request", "pod", req.PodNamespace+"/"+req.PodName, "command", req.Command)
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func (s *CNIServer) handle(ctx context.Context, req *wire.Request) (*wire.Response, error) {
	log := s.Log.WithValues("pod", req.PodNamespace+"/"+req.PodName, "command", req.Command)
	netns := s.agentNetnsPath(req.Netns)
	if req.Command == wire.CommandDel {
		for _, uid := range s.Enroller.Lookup(req.PodNamespace, req.PodName) {
			if p, _ := s.Enroller.Get(uid); netns != "" && p.NetnsPath != netns {
				continue // another sandbox of a pod with this name
			}
			if err := s.Enroller.Unenroll(uid); err != nil {
				log.Error(err, "releasing pod on CNI DEL")
			}
		}
		return &wire.Response{}, nil
	}
	pod, ns, err := s.lookup(ctx, req.PodNamespace, req.PodName)
	if err != nil {
		return nil, err
	}
	d := Decide(ns, pod)
	if !d.Enroll {
		log.V(1).Info("pod not enrolled", "reason", d.Reason)
		return &wire.Response{}, nil
	}
	p := podFromObject(pod)
	p.NetnsPath = netns
	if ips := req.Addrs(); len(ips) > 0 {
		p.IPs = ips
	}
	if err := s.Enroller.Enroll(p, true); err != nil {
		log.Error(err, "capturing pod on CNI ADD")
		return &wire.Response{Enrolled: true, Error: err.Error()}, nil
	}
	log.Info("pod captured on CNI ADD", "reason", d.Reason, "netns", netns)
	if s.OnEnrolled != nil {
		s.OnEnrolled(pod.Namespace, pod.Name)
	}
	return &wire.Response{Enrolled: true}, nil
}

// agentNetnsPath is where the agent opens the runtime's netns path (one
// wire.ValidateNetnsPath accepted): /proc/<pid>/ns/net under ProcRoot;
// /var/run/netns is mounted at its own path.
func (s *CNIServer) agentNetnsPath(path string) string {
	if rest, ok := strings.CutPrefix(path, "/proc/"); ok && s.ProcRoot != "" {
		return filepath.Join(s.ProcRoot, rest)
	}
	return path
}

// lookup reads the pod and its namespace, from the cache first.
func (s *CNIServer) lookup(ctx context.Context, namespace, name string) (*corev1.Pod, *corev1.Namespace, error) {
	pod := &corev1.Pod{}
	if err := getEither(ctx, s.Cache, s.Live, types.NamespacedName{Namespace: namespace, Name: name}, pod); err != nil {
		return nil, nil, fmt.Errorf("reading pod %s/%s: %w", namespace, name, err)
	}
	ns := &corev1.Namespace{}
	if err := getEither(ctx, s.Cache, s.Live, types.NamespacedName{Name: namespace}, ns); err != nil {
		return nil, nil, fmt.Errorf("reading namespace %s: %w", namespace, err)
	}
	return pod, ns, nil
}

func getEither(ctx context.Context, cache, live client.Reader, key types.NamespacedName, obj client.Object) error {
	err := cache.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) && live != nil {
		err = live.Get(ctx, key, obj)
	}
	return err
}
