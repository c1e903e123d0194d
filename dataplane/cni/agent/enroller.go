package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/go-logr/logr"

	"github.com/ambientmesh/ambient-operator/dataplane/cni/rules"
)

// Pod is an enrolled pod: what ztunnel needs plus its IPs (for the host
// probe SNAT).
type Pod struct {
	Workload
	IPs []netip.Addr
}

// Enroller captures and releases pods: in-pod rules, host probe SNAT, and
// the hand-off to ztunnel, in that order (and the reverse to release).
type Enroller struct {
	Rules     rules.Rules
	PodConfig rules.PodConfig
	// HostNetns is the node's netns path for the probe SNAT ("" = ours).
	HostNetns string
	Ztunnel   *Ztunnel
	Metrics   *Metrics
	Log       logr.Logger

	mu   sync.Mutex
	pods map[string]Pod // by uid
}

// Enroll captures p. With requireZtunnel (the CNI ADD path), the pod must
// also be acknowledged by ztunnel, else everything is rolled back and the
// error returned so the runtime retries; otherwise a disconnected ztunnel
// gets the pod at its next replay.
func (e *Enroller) Enroll(p Pod, requireZtunnel bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pods == nil {
		e.pods = map[string]Pod{}
	}
	changed, err := e.Rules.Install(p.NetnsPath, e.PodConfig)
	e.Metrics.ruleOp(e.Rules.Backend(), "install", changed, err)
	if err != nil {
		e.Metrics.Failures.WithLabelValues("rules").Inc()
		return fmt.Errorf("installing redirection rules: %w", err)
	}
	prev, known := e.pods[p.UID]
	e.pods[p.UID] = p
	e.Metrics.EnrolledPods.Set(float64(len(e.pods)))
	if err := e.syncHostLocked(); err != nil {
		return err
	}
	if known && prev.NetnsPath == p.NetnsPath && e.Ztunnel.Has(p.UID) && (!requireZtunnel || e.Ztunnel.Connected()) {
		return nil // ztunnel has it (or will at the next replay)
	}
	err = e.Ztunnel.Add(p.Workload)
	if err == nil || (errors.Is(err, ErrZtunnelNotConnected) && !requireZtunnel) {
		return nil
	}
	e.Metrics.Failures.WithLabelValues("ztunnel").Inc()
	e.Ztunnel.Forget(p.UID)
	err = fmt.Errorf("handing the pod to ztunnel: %w", err)
	if requireZtunnel {
		err = errors.Join(err, e.releaseLocked(p.UID))
	}
	return err
}

// Unenroll releases the pod: rules first (traffic flows directly again),
// then the probe SNAT, then ztunnel is told to let go.
func (e *Enroller) Unenroll(uid string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.pods[uid]; !ok {
		return nil
	}
	if err := e.releaseLocked(uid); err != nil {
		return err
	}
	if err := e.Ztunnel.Del(uid); err != nil {
		e.Metrics.Failures.WithLabelValues("ztunnel").Inc()
		return fmt.Errorf("telling ztunnel to release the pod: %w", err)
	}
	return nil
}

func (e *Enroller) releaseLocked(uid string) error {
	p := e.pods[uid]
	removed, err := e.Rules.Remove(p.NetnsPath)
	if err != nil && netnsGone(p.NetnsPath) {
		err = nil // the sandbox is gone and its rules with it
	}
	e.Metrics.ruleOp(e.Rules.Backend(), "remove", removed, err)
	if err != nil {
		e.Metrics.Failures.WithLabelValues("rules").Inc()
		return fmt.Errorf("removing redirection rules: %w", err)
	}
	delete(e.pods, uid)
	e.Metrics.EnrolledPods.Set(float64(len(e.pods)))
	return e.syncHostLocked()
}

func netnsGone(path string) bool {
	_, err := os.Stat(path)
	return err != nil
}

func (e *Enroller) syncHostLocked() error {
	var ips []netip.Addr
	for _, p := range e.pods {
		ips = append(ips, p.IPs...)
	}
	if len(ips) == 0 {
		// No pod left: leave the node as it was before the first one.
		err := e.Rules.RemoveHost(e.HostNetns)
		e.Metrics.ruleOp(e.Rules.Backend(), "remove_host", true, err)
		if err != nil {
			e.Metrics.Failures.WithLabelValues("host_rules").Inc()
			return fmt.Errorf("removing host probe SNAT: %w", err)
		}
		return nil
	}
	changed, err := e.Rules.SyncHost(e.HostNetns, e.PodConfig, ips)
	e.Metrics.ruleOp(e.Rules.Backend(), "sync_host", changed, err)
	if err != nil {
		e.Metrics.Failures.WithLabelValues("host_rules").Inc()
		return fmt.Errorf("updating host probe SNAT: %w", err)
	}
	return nil
}

// Get returns the enrolled pod with uid.
func (e *Enroller) Get(uid string) (Pod, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p, ok := e.pods[uid]
	return p, ok
}

// Lookup returns the uids of enrolled pods named namespace/name (a pod
// recreated under the same name may briefly have two).
func (e *Enroller) Lookup(namespace, name string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var uids []string
	for uid, p := range e.pods {
		if p.Namespace == namespace && p.Name == name {
			uids = append(uids, uid)
		}
	}
	slices.Sort(uids)
	return uids
}

// UIDs lists every enrolled pod.
func (e *Enroller) UIDs() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	uids := make([]string, 0, len(e.pods))
	for uid := range e.pods {
		uids = append(uids, uid)
	}
	slices.Sort(uids)
	return uids
}
