package testenv

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

// Manager is a controller suite's world: an envtest environment (New) and a
// controller-runtime manager running the controllers under test on it.
type Manager struct {
	// Client reads past the manager's cache, as a user does, so that a test
	// sees what is stored rather than what the controllers have seen.
	Client client.Client

	env     *envtest.Environment
	cancel  context.CancelFunc
	stopped chan error // the manager's Start result
}

// StartManager starts an environment and, on it, a manager with the mesh
// scheme and cacheOpts (the operator's cache setting, for one), its metrics
// and health endpoints off. setup registers the controllers under test. It
// returns once the manager's cache has synced; when it fails half way, it
// stops what it started.
func StartManager(cacheOpts cache.Options, setup func(ctrl.Manager) error) (m *Manager, err error) {
	m = &Manager{stopped: make(chan error, 1)}
	if m.env, err = New(); err != nil {
		return nil, err
	}
	cfg, err := m.env.Start()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, m.Stop())
			m = nil
		}
	}()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 meshscheme.New(),
		Cache:                  cacheOpts,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Controller names must be unique in a process; a test may start
		// a second manager with the same controllers (a second operator).
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return m, err
	}
	if err := setup(mgr); err != nil {
		return m, fmt.Errorf("setting up the controllers: %w", err)
	}
	if m.Client, err = client.New(cfg, client.Options{Scheme: meshscheme.New()}); err != nil {
		return m, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() { m.stopped <- mgr.Start(ctx) }()
	return m, m.waitForSync(mgr.GetCache())
}

// waitForSync waits for the manager's cache to sync, or for the manager to
// fail first (it then never would).
func (m *Manager) waitForSync(c cache.Cache) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	synced := make(chan bool, 1)
	go func() { synced <- c.WaitForCacheSync(ctx) }()
	select {
	case ok := <-synced:
		if !ok {
			return errors.New("the manager's cache did not sync")
		}
		return nil
	case err := <-m.stopped:
		m.stopped <- err // for Stop
		return errors.Join(errors.New("the manager stopped before its cache synced"), err)
	}
}

// Stop stops the manager, then the environment. It returns the manager's
// error, if it failed, with the environment's.
func (m *Manager) Stop() error {
	var errs []error
	if m.cancel != nil {
		m.cancel()
		errs = append(errs, <-m.stopped)
		m.cancel = nil
	}
	return errors.Join(append(errs, m.env.Stop())...)
}
