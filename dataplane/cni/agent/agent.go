// Package agent is the CNI node agent: one per node, it installs the
// chained plugin, answers it, watches this node's pods and the namespaces,
// captures enrolled pods' traffic (in-pod rules, host probe SNAT) and hands
// their network namespaces to ztunnel.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ambientmesh/ambient-operator/dataplane/cni/conflist"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/plugin"
	"github.com/ambientmesh/ambient-operator/dataplane/cni/rules"
)

// Options configure one agent.
type Options struct {
	NodeName string
	// Backend is "iptables" or "nftables" (AmbientMesh spec.cni.redirection).
	Backend   string
	PodConfig rules.PodConfig
	// ZtunnelSocket is ztunnel's hand-off socket.
	ZtunnelSocket string
	// CNISocket is where the plugin reaches the agent; StateFile is the
	// enrollment state the plugin reads when the agent is down.
	CNISocket string
	StateFile string
	// PluginBinary is the plugin shipped with the agent; empty disables the
	// installer (tests that write the conflist themselves).
	PluginBinary string
	CNIBinDir    string
	CNIConfDir   string
	// NetnsDirs and ProcRoot are searched for running pods' namespaces.
	NetnsDirs []string
	ProcRoot  string
	// HostNetns is the node's netns for the probe SNAT ("" = the agent's).
	HostNetns string
	// MetricsAddr and ProbeAddr ("0" disables).
	MetricsAddr string
	ProbeAddr   string
	// Resync re-checks enrolled pods' rules this often.
	Resync time.Duration
	// Registry for metrics (default: controller-runtime's).
	Registry ctrlmetrics.RegistererGatherer
	Log      logr.Logger
}

func (o *Options) validate() error {
	var errs []error
	if o.NodeName == "" {
		errs = append(errs, errors.New("nodeName: required (set NODE_NAME from spec.nodeName)"))
	}
	if o.ZtunnelSocket == "" {
		errs = append(errs, errors.New("ztunnelSocket: required"))
	}
	if o.CNISocket == "" {
		errs = append(errs, errors.New("cniSocket: required"))
	}
	if o.StateFile == "" {
		errs = append(errs, errors.New("stateFile: required"))
	}
	if o.PluginBinary != "" && (o.CNIBinDir == "" || o.CNIConfDir == "") {
		errs = append(errs, errors.New("cniBinDir/cniConfDir: required to install the plugin"))
	}
	if err := o.PodConfig.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("podConfig.%w", err))
	}
	return errors.Join(errs...)
}

// Agent is a wired node agent; Start runs it.
type Agent struct {
	Manager   manager.Manager
	Enroller  *Enroller
	Ztunnel   *Ztunnel
	Installer *conflist.Installer
	Metrics   *Metrics
}

// New builds the agent on cfg (the apiserver) without starting anything.
func New(cfg *rest.Config, o Options) (*Agent, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	backend, err := rules.New(o.Backend)
	if err != nil {
		return nil, err
	}
	if o.Registry == nil {
		o.Registry = ctrlmetrics.Registry
	}
	if o.Resync == 0 {
		o.Resync = 10 * time.Minute
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Logger: o.Log,
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Field: fields.OneTermEqualSelector("spec.nodeName", o.NodeName)},
		}},
		Metrics:                metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress: o.ProbeAddr,
	})
	if err != nil {
		return nil, err
	}
	metrics := NewMetrics(o.Registry)
	zt := &Ztunnel{SocketPath: o.ZtunnelSocket, Log: o.Log.WithName("ztunnel"), OnConnection: func(up bool) {
		metrics.ZtunnelConnected.Set(map[bool]float64{true: 1, false: 0}[up])
	}}
	enroller := &Enroller{Rules: backend, PodConfig: o.PodConfig, HostNetns: o.HostNetns, Ztunnel: zt, Metrics: metrics, Log: o.Log}
	a := &Agent{Manager: mgr, Enroller: enroller, Ztunnel: zt, Metrics: metrics}

	rec := &PodReconciler{
		Client: mgr.GetClient(), Enroller: enroller, Recorder: mgr.GetEventRecorder("ambient-cni-agent"),
		Finder: &NetnsFinder{Dirs: o.NetnsDirs, ProcRoot: o.ProcRoot}, StateFile: o.StateFile, Resync: o.Resync,
	}
	if err := rec.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	srv := &CNIServer{Enroller: enroller, Cache: mgr.GetClient(), Live: mgr.GetAPIReader(), Log: o.Log.WithName("cni"), ProcRoot: o.ProcRoot}
	runnables := []manager.RunnableFunc{
		func(ctx context.Context) error { return srv.Serve(ctx, o.CNISocket) },
		// Rebuild the set from the cache before the first snapshot.
		func(ctx context.Context) error { rec.Rebuild(ctx); return zt.Run(ctx) },
	}
	if o.PluginBinary != "" {
		a.Installer = &conflist.Installer{
			BinarySource: o.PluginBinary, BinDir: o.CNIBinDir, ConfDir: o.CNIConfDir, Log: o.Log.WithName("installer"),
			Entry:    map[string]any{"type": plugin.Type, "agentSocket": o.CNISocket, "stateFile": o.StateFile},
			OnChange: metrics.PluginInstalls.Inc,
		}
		runnables = append(runnables, a.Installer.Run)
	}
	for _, r := range runnables {
		if err := mgr.Add(r); err != nil {
			return nil, err
		}
	}
	if err := mgr.AddReadyzCheck("plugin-and-ztunnel", a.ready); err != nil {
		return nil, err
	}
	if err := mgr.AddHealthzCheck("ping", func(*http.Request) error { return nil }); err != nil {
		return nil, err
	}
	// The DaemonSet's readiness probe asks /healthz/ready (the path every
	// component serves); controller-runtime serves /healthz/<check>.
	if err := mgr.AddHealthzCheck("ready", a.ready); err != nil {
		return nil, err
	}
	return a, nil
}

// ready: the plugin is installed (when this agent installs it) and ztunnel
// has acknowledged a snapshot on a live connection.
func (a *Agent) ready(*http.Request) error {
	if a.Installer != nil && !a.Installer.Installed() {
		return errors.New("CNI plugin is not installed in the primary network config yet")
	}
	if !a.Ztunnel.Connected() {
		return ErrZtunnelNotConnected
	}
	return nil
}

// Start runs the agent until ctx ends. Rules and the plugin stay in place
// on return, so a restarting agent never leaves a pod uncaptured.
func (a *Agent) Start(ctx context.Context) error { return a.Manager.Start(ctx) }

// Uninstall removes the plugin entry and binary, the state file (so a
// leftover plugin would pass every pod through) and every rule this agent
// manages. It is for removing the mesh from a node, never for a restart.
func (a *Agent) Uninstall(stateFile string) error {
	var errs []error
	if err := os.Remove(stateFile); err != nil && !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	if a.Installer != nil {
		errs = append(errs, a.Installer.Uninstall())
	}
	for _, uid := range a.Enroller.UIDs() {
		errs = append(errs, a.Enroller.Unenroll(uid))
	}
	errs = append(errs, a.Enroller.Rules.RemoveHost(a.Enroller.HostNetns))
	return errors.Join(errs...)
}
