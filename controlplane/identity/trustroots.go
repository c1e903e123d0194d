package identity

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
)

// Trust roots across a root CA rotation. When the mesh issuer's root changes (cert-manager
// re-issues the root CA Certificate with a new key, or the CA Secret is replaced), every
// certificate issued before still chains to the old root until it expires. So the trust
// bundle is the roots of the control plane's own certificate, plus every root the control
// plane issued a certificate under, for as long as such a certificate may be valid.

const (
	// TrustRootsConfigMap, in the control plane's namespace, records per root until when a
	// certificate the control plane issued under it may be valid. Every replica reads,
	// watches and extends it; a restarted replica starts from it.
	TrustRootsConfigMap = "ambientmesh-trust-roots"
	// TrustRootsKey is the ConfigMap's data key: a JSON object from each root's SHA-256
	// fingerprint (hex, of the DER) to {"pem", "issuedUntil"}.
	TrustRootsKey = "roots.json"
	// RootRetirementSkew keeps a root trusted this long after the last certificate issued
	// under it expires, for peers whose clocks run behind.
	RootRetirementSkew = 5 * time.Minute
	// issuedUntilStep is added to a certificate's expiry when it extends a root's record,
	// so that steady issuance rewrites the record about once per step, not per certificate.
	issuedUntilStep = 15 * time.Minute
	// watchRetry is the pause before watching the record again after the watch failed.
	watchRetry = 10 * time.Second
)

// rootRecord is one trust root and a time no certificate issued under it outlives.
type rootRecord struct {
	PEM         string    `json:"pem"`
	IssuedUntil time.Time `json:"issuedUntil"`
}

// rootRecords are keyed by the root's fingerprint.
type rootRecords map[string]rootRecord

// trustRoot is a parsed root: its fingerprint and its PEM as this package writes it.
type trustRoot struct {
	fingerprint, pem string
}

// parseTrustRoot reads the first certificate of a PEM text.
func parseTrustRoot(text string) (trustRoot, error) {
	block, _ := pem.Decode([]byte(text))
	if block == nil || block.Type != "CERTIFICATE" {
		return trustRoot{}, errors.New("no PEM certificate")
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return trustRoot{}, err
	}
	sum := sha256.Sum256(block.Bytes)
	return trustRoot{
		fingerprint: hex.EncodeToString(sum[:]),
		pem:         string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes})),
	}, nil
}

// parseTrustRoots parses each PEM text, returning those that parse and the errors of the rest.
func parseTrustRoots(texts []string) ([]trustRoot, error) {
	var roots []trustRoot
	var errs []error
	for i, text := range texts {
		r, err := parseTrustRoot(text)
		if err != nil {
			errs = append(errs, fmt.Errorf("root %d: %w", i, err))
			continue
		}
		roots = append(roots, r)
	}
	return roots, errors.Join(errs...)
}

// covers reports whether every root is recorded as issuing until notAfter or later.
func (rs rootRecords) covers(roots []trustRoot, notAfter time.Time) bool {
	for _, r := range roots {
		rec, ok := rs[r.fingerprint]
		if !ok || rec.IssuedUntil.Before(notAfter) {
			return false
		}
	}
	return true
}

// cover extends the record of each root so that it covers a certificate valid until notAfter.
func (rs rootRecords) cover(roots []trustRoot, notAfter time.Time) {
	for _, r := range roots {
		if rec, ok := rs[r.fingerprint]; !ok || rec.IssuedUntil.Before(notAfter) {
			rs[r.fingerprint] = rootRecord{PEM: r.pem, IssuedUntil: notAfter.Add(issuedUntilStep).UTC().Truncate(time.Second)}
		}
	}
}

// merge takes from other every root not recorded here and every later bound.
func (rs rootRecords) merge(other rootRecords) {
	for fp, rec := range other {
		if have, ok := rs[fp]; !ok || have.IssuedUntil.Before(rec.IssuedUntil) {
			rs[fp] = rec
		}
	}
}

// prune forgets the roots that have retired by now.
func (rs rootRecords) prune(now time.Time) {
	for fp, rec := range rs {
		if retired(rec, now) {
			delete(rs, fp)
		}
	}
}

func (rs rootRecords) equal(other rootRecords) bool {
	if len(rs) != len(other) {
		return false
	}
	for fp, rec := range rs {
		o, ok := other[fp]
		if !ok || o.PEM != rec.PEM || !o.IssuedUntil.Equal(rec.IssuedUntil) {
			return false
		}
	}
	return true
}

// nextRetirement is the earliest time after now at which a recorded root retires.
func (rs rootRecords) nextRetirement(now time.Time) (time.Time, bool) {
	var next time.Time
	for _, rec := range rs {
		at := rec.IssuedUntil.Add(RootRetirementSkew)
		if at.After(now) && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	return next, !next.IsZero()
}

func retired(rec rootRecord, now time.Time) bool {
	return !now.Before(rec.IssuedUntil.Add(RootRetirementSkew))
}

// trustBundle is the current roots, then every recorded root that has not retired by now
// (by fingerprint, so that the order only changes when the set does).
func trustBundle(current []trustRoot, records rootRecords, now time.Time) []trustRoot {
	var bundle []trustRoot
	seen := map[string]bool{}
	for _, r := range current {
		if !seen[r.fingerprint] {
			seen[r.fingerprint] = true
			bundle = append(bundle, r)
		}
	}
	var retiring []trustRoot
	for fp, rec := range records {
		if !seen[fp] && !retired(rec, now) {
			retiring = append(retiring, trustRoot{fingerprint: fp, pem: rec.PEM})
		}
	}
	slices.SortFunc(retiring, func(a, b trustRoot) int { return strings.Compare(a.fingerprint, b.fingerprint) })
	return append(bundle, retiring...)
}

// decodeRootRecords reads the ConfigMap's record. Entries whose PEM is not a certificate
// are left out and reported; an entry is keyed by its certificate's own fingerprint.
func decodeRootRecords(data string) (rootRecords, error) {
	if data == "" {
		return rootRecords{}, nil
	}
	var raw map[string]rootRecord
	if err := json.Unmarshal([]byte(data), &raw); err != nil {
		return rootRecords{}, fmt.Errorf("%s: %w", TrustRootsKey, err)
	}
	out := rootRecords{}
	var errs []error
	for key, rec := range raw {
		r, err := parseTrustRoot(rec.PEM)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: root %q: %w", TrustRootsKey, key, err))
			continue
		}
		out.merge(rootRecords{r.fingerprint: {PEM: r.pem, IssuedUntil: rec.IssuedUntil.UTC()}})
	}
	return out, errors.Join(errs...)
}

// TrustRootsOptions configure TrustRoots.
type TrustRootsOptions struct {
	// Client reads, writes and watches the ConfigMap (a live client).
	Client client.WithWatch
	// Namespace of the ConfigMap: the control plane's.
	Namespace string
	// Clock decides when roots retire (default the real clock).
	Clock clock.Clock
	// Publish is called with the bundle (PEM) whenever it changes and is not empty.
	Publish func(bundle []string)
	// AwaitPublished, when set, is called with the bundle after the first certificate
	// under a root was recorded and before Issued returns: it waits until the proxies hold
	// that bundle, so that no peer sees a certificate under a root it does not trust yet.
	AwaitPublished func(ctx context.Context, bundle []string)
	Log            logr.Logger
}

// TrustRoots is the mesh's trust bundle across root rotations: the roots of the control
// plane's own certificate (SetCurrent), and every root the CA issued a certificate under
// (Issued) until that certificate can no longer be valid, plus RootRetirementSkew. The
// record of issued roots is kept in the ConfigMap TrustRootsConfigMap, shared by the
// replicas (Run watches it) and read again on a restart (Load).
type TrustRoots struct {
	opts TrustRootsOptions
	key  client.ObjectKey

	saveMu sync.Mutex // one write of the ConfigMap at a time

	mu      sync.Mutex
	current []trustRoot
	records rootRecords
	bundle  []trustRoot
	pool    *x509.CertPool
	changed chan struct{} // tells Run the retirement times may have changed
}

// NewTrustRoots returns an empty bundle; Load fills it from the ConfigMap.
func NewTrustRoots(opts TrustRootsOptions) *TrustRoots {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	return &TrustRoots{
		opts:    opts,
		key:     client.ObjectKey{Namespace: opts.Namespace, Name: TrustRootsConfigMap},
		records: rootRecords{},
		pool:    x509.NewCertPool(),
		changed: make(chan struct{}, 1),
	}
}

// Roots returns the bundle as PEM.
func (t *TrustRoots) Roots() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, len(t.bundle))
	for i, r := range t.bundle {
		out[i] = r.pem
	}
	return out
}

// Pool returns the bundle as a certificate pool (to verify client certificates).
func (t *TrustRoots) Pool() *x509.CertPool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pool
}

// SetCurrent sets the roots of the control plane's own certificate, which are always in
// the bundle.
func (t *TrustRoots) SetCurrent(roots []string) {
	parsed, err := parseTrustRoots(roots)
	if err != nil {
		t.opts.Log.Error(err, "the control plane's certificate source reported a root that is not a certificate; leaving it out")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.current = parsed
	t.refreshLocked()
}

// Load reads the ConfigMap (a missing one is an empty record).
func (t *TrustRoots) Load(ctx context.Context) error {
	var cm corev1.ConfigMap
	if err := t.opts.Client.Get(ctx, t.key, &cm); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("reading ConfigMap %s: %w", t.key, err)
	}
	t.take(&cm)
	return nil
}

// take merges a ConfigMap's record into the bundle.
func (t *TrustRoots) take(cm *corev1.ConfigMap) {
	records, err := decodeRootRecords(cm.Data[TrustRootsKey])
	if err != nil {
		t.opts.Log.Error(err, "part of the trust-roots record is unreadable; using the rest", "configMap", t.key.String())
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.records.merge(records)
	t.refreshLocked()
}

// Issued records that a certificate valid until notAfter was issued under roots (PEM). It
// returns once the record is in the ConfigMap and the bundle (with those roots) is
// published, and, when the certificate is the first recorded under one of its roots, once
// AwaitPublished returned. A caller that gets an error must not hand the certificate out:
// a restarted or another replica could drop its root before it expires.
func (t *TrustRoots) Issued(ctx context.Context, roots []string, notAfter time.Time) error {
	parsed, err := parseTrustRoots(roots)
	if err != nil {
		return err
	}
	if t.covered(parsed, notAfter) {
		return nil
	}
	t.saveMu.Lock()
	defer t.saveMu.Unlock()
	if t.covered(parsed, notAfter) { // recorded by the call that held saveMu before us
		return nil
	}
	t.mu.Lock()
	first := false
	for _, r := range parsed {
		if _, ok := t.records[r.fingerprint]; !ok {
			first = true
		}
	}
	t.mu.Unlock()
	saved, err := t.save(ctx, func(rs rootRecords) { rs.cover(parsed, notAfter) })
	if err != nil {
		return fmt.Errorf("recording the trust roots in ConfigMap %s: %w", t.key, err)
	}
	t.mu.Lock()
	t.records.merge(saved)
	t.refreshLocked()
	t.mu.Unlock()
	if first && t.opts.AwaitPublished != nil {
		t.opts.AwaitPublished(ctx, t.Roots())
	}
	return nil
}

func (t *TrustRoots) covered(roots []trustRoot, notAfter time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.records.covers(roots, notAfter)
}

// save applies change to the stored record, merged with ours, and writes it when that
// changed anything; a write that lost a race with another replica is done again.
func (t *TrustRoots) save(ctx context.Context, change func(rootRecords)) (rootRecords, error) {
	var saved rootRecords
	raced := func(err error) bool { return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) }
	err := retry.OnError(retry.DefaultBackoff, raced, func() error {
		var cm corev1.ConfigMap
		err := t.opts.Client.Get(ctx, t.key, &cm)
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		exists := err == nil
		stored, err := decodeRootRecords(cm.Data[TrustRootsKey])
		if exists && err != nil {
			t.opts.Log.Error(err, "part of the trust-roots record is unreadable; rewriting it", "configMap", t.key.String())
		}
		next := rootRecords{}
		next.merge(stored)
		t.mu.Lock()
		next.merge(t.records) // a deleted or damaged record is restored from ours
		t.mu.Unlock()
		change(next)
		next.prune(t.opts.Clock.Now())
		if exists && err == nil && next.equal(stored) {
			saved = next
			return nil
		}
		data, err := json.Marshal(next)
		if err != nil {
			return err
		}
		if !exists {
			cm = t.newConfigMap(ctx)
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[TrustRootsKey] = string(data)
		if exists {
			err = t.opts.Client.Update(ctx, &cm)
		} else {
			err = t.opts.Client.Create(ctx, &cm)
		}
		if err == nil {
			saved = next
		}
		return err
	})
	return saved, err
}

// newConfigMap is the record's ConfigMap, owned by the mesh ConfigMap when there is one,
// so that uninstalling the mesh removes it too.
func (t *TrustRoots) newConfigMap(ctx context.Context) corev1.ConfigMap {
	cm := corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: t.key.Namespace, Name: t.key.Name,
		Labels: map[string]string{"app.kubernetes.io/part-of": "ambientmesh", "app.kubernetes.io/component": "identity"}}}
	var owner corev1.ConfigMap
	if err := t.opts.Client.Get(ctx, client.ObjectKey{Namespace: t.key.Namespace, Name: meshconfig.ConfigMapName}, &owner); err == nil {
		cm.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID}}
	}
	return cm
}

// refreshLocked forgets retired records, recomputes the bundle at the clock's time and
// publishes it when it changed.
func (t *TrustRoots) refreshLocked() {
	now := t.opts.Clock.Now()
	t.records.prune(now)
	bundle := trustBundle(t.current, t.records, now)
	if slices.Equal(bundle, t.bundle) {
		return
	}
	for _, r := range bundle {
		if !slices.Contains(t.bundle, r) {
			t.opts.Log.Info("trust root added to the bundle", "sha256", r.fingerprint)
		}
	}
	for _, r := range t.bundle {
		if !slices.Contains(bundle, r) {
			t.opts.Log.Info("trust root retired from the bundle", "sha256", r.fingerprint)
		}
	}
	t.bundle = bundle
	t.pool = x509.NewCertPool()
	pems := make([]string, len(bundle))
	for i, r := range bundle {
		pems[i] = r.pem
		t.pool.AppendCertsFromPEM([]byte(r.pem))
	}
	if len(pems) > 0 && t.opts.Publish != nil {
		t.opts.Publish(pems)
	}
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// Run keeps the bundle current until ctx ends: it takes the other replicas' records from
// a watch on the ConfigMap, and retires each root when its time comes.
func (t *TrustRoots) Run(ctx context.Context) {
	var w watch.Interface
	defer func() {
		if w != nil {
			w.Stop()
		}
	}()
	rewatch := time.NewTimer(0)
	defer rewatch.Stop()
	for {
		// Every pass retires what is due, even when the clock passed it between passes.
		t.mu.Lock()
		t.refreshLocked()
		t.mu.Unlock()
		var events <-chan watch.Event
		if w != nil {
			events = w.ResultChan()
		}
		retirement, stopTimer := t.retirementTimer()
		select {
		case <-ctx.Done():
			stopTimer()
			return
		case <-rewatch.C:
			var err error
			w, err = t.opts.Client.Watch(ctx, &corev1.ConfigMapList{}, client.InNamespace(t.key.Namespace),
				client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", t.key.Name)})
			if err != nil {
				if ctx.Err() == nil {
					t.opts.Log.Error(err, "watching the trust-roots ConfigMap; retrying", "in", watchRetry)
				}
				w = nil
				rewatch.Reset(watchRetry)
			}
		case ev, open := <-events:
			if !open {
				w.Stop()
				w = nil
				rewatch.Reset(0)
				break
			}
			if cm, ok := ev.Object.(*corev1.ConfigMap); ok && cm.Name == t.key.Name && (ev.Type == watch.Added || ev.Type == watch.Modified) {
				t.take(cm)
			}
		case <-retirement: // the next pass retires it
		case <-t.changed: // the next retirement may be another one
		}
		stopTimer()
	}
}

// retirementTimer fires when the next recorded root retires (never when none will).
func (t *TrustRoots) retirementTimer() (<-chan time.Time, func()) {
	t.mu.Lock()
	now := t.opts.Clock.Now()
	next, ok := t.records.nextRetirement(now)
	t.mu.Unlock()
	if !ok {
		return nil, func() {}
	}
	timer := t.opts.Clock.NewTimer(next.Sub(now))
	return timer.C(), func() { timer.Stop() }
}
