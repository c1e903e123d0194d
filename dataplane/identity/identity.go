// Package identity obtains and renews the workload certificates a data-plane proxy presents:
// ztunnel holds one per service account with a pod on its node, a waypoint holds its own. Each
// has its own ECDSA P-256 key, is requested from the certificate service with a CSR and is
// renewed at half its lifetime. It implements the
// hbone.CertSource that the HBONE client and servers ask at every handshake, so a renewed
// certificate applies to new connections while open ones continue.
package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/metadata"

	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/pemcert"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
)

// TokenSource returns the caller's current projected service-account token.
type TokenSource func() (string, error)

// Config configures a Manager.
type Config struct {
	CA    pb.CertificateServiceClient
	Token TokenSource
	// TTL requested for certificates (default 24h); the CA may shorten it.
	TTL time.Duration
	// RetryMin/RetryMax bound the retry delay after a failed request (defaults 1s, 30s).
	RetryMin, RetryMax time.Duration
	Log                logr.Logger
}

// Manager holds the certificates of the identities in use on this node.
type Manager struct {
	cfg Config

	mu     sync.Mutex
	certs  map[spiffe.ID]*entry
	roots  *x509.CertPool
	rootCA []*x509.Certificate
}

type entry struct {
	refs    int
	ctx     context.Context // ends when the last reference is released
	cancel  context.CancelFunc
	timer   *time.Timer   // the next request (renewal or retry)
	retry   time.Duration // the next retry delay
	ready   chan struct{} // closed once the first certificate is in
	cert    *tls.Certificate
	leaf    *x509.Certificate
	renewAt time.Time
	err     error // last failure, for errors while no certificate is present
}

// NewManager returns a Manager; identities are added with Acquire.
func NewManager(cfg Config) *Manager {
	if cfg.TTL <= 0 {
		cfg.TTL = 24 * time.Hour
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 30 * time.Second
	}
	return &Manager{cfg: cfg, certs: map[spiffe.ID]*entry{}}
}

// Acquire says that a pod with identity id runs on this node: the first reference starts
// fetching and renewing its certificate.
func (m *Manager) Acquire(id spiffe.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.certs[id]; e != nil {
		e.refs++
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &entry{refs: 1, ctx: ctx, cancel: cancel, ready: make(chan struct{}), retry: m.cfg.RetryMin}
	m.certs[id] = e
	e.timer = time.AfterFunc(0, func() { _ = m.refresh(ctx, id, e) })
}

// Release drops a reference; the last one stops renewal and forgets the certificate.
func (m *Manager) Release(id spiffe.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.certs[id]
	if e == nil {
		return
	}
	e.refs--
	if e.refs <= 0 {
		e.cancel()
		e.timer.Stop()
		delete(m.certs, id)
	}
}

// ErrUnknownIdentity is returned for an identity with no pod on this node.
var ErrUnknownIdentity = errors.New("no pod with this identity on this node")

// Certificate returns the current certificate of id, waiting for the first one until ctx
// ends (lazy start). It implements hbone.CertSource.
func (m *Manager) Certificate(ctx context.Context, id spiffe.ID) (*tls.Certificate, error) {
	m.mu.Lock()
	e := m.certs[id]
	m.mu.Unlock()
	if e == nil {
		return nil, fmt.Errorf("certificate for %s: %w", id, ErrUnknownIdentity)
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		m.mu.Lock()
		last := e.err
		m.mu.Unlock()
		if last != nil {
			return nil, fmt.Errorf("no certificate for %s yet (last attempt: %v): %w", id, last, ctx.Err())
		}
		return nil, fmt.Errorf("no certificate for %s yet: %w", id, ctx.Err())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return e.cert, nil
}

// Roots returns the roots the CA returned (nil before any certificate).
func (m *Manager) Roots() *x509.CertPool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.roots
}

// refresh requests a certificate and schedules the next attempt: at half life after a
// success, with exponential backoff after a failure. It runs on a timer, so an identity
// holds no goroutine between renewals; RenewAll calls it directly.
func (m *Manager) refresh(ctx context.Context, id spiffe.ID, e *entry) error {
	log := m.cfg.Log.WithValues("identity", id.String())
	cert, leaf, err := m.fetch(ctx, id)
	m.mu.Lock()
	defer m.mu.Unlock()
	if ctx.Err() != nil {
		return ctx.Err() // released meanwhile (or RenewAll's caller gave up): keep the schedule
	}
	var wait time.Duration
	if err != nil {
		e.err = err
		wait = e.retry
		if e.leaf != nil { // never wait past the current certificate's expiry
			wait = min(wait, max(time.Until(e.leaf.NotAfter), 0))
		}
		e.retry = min(e.retry*2, m.cfg.RetryMax)
		log.Error(err, "certificate request failed", "retryIn", wait)
	} else {
		if e.cert == nil {
			close(e.ready)
		}
		e.cert, e.leaf, e.err = cert, leaf, nil
		e.retry = m.cfg.RetryMin
		e.renewAt = renewAt(leaf, time.Now())
		wait = time.Until(e.renewAt)
		log.Info("certificate issued", "serial", leaf.SerialNumber.Text(16), "notAfter", leaf.NotAfter, "renewIn", wait.Round(time.Second))
	}
	e.timer.Reset(wait)
	return err
}

// Renewal is the outcome of a forced renewal of one identity's certificate.
type Renewal struct {
	Identity       string `json:"identity"`
	PreviousSerial string `json:"previousSerial,omitempty"`
	Serial         string `json:"serial,omitempty"` // the new certificate's; empty when it failed
	Error          string `json:"error,omitempty"`
}

// RenewAll renews every identity's certificate now (new key, new CSR), through the same
// path as the half-life renewal, one identity after the other; ctx bounds the wait. New
// handshakes use the new certificates; open connections keep the one they were made with.
// The next scheduled renewal moves to the new certificates' half life.
func (m *Manager) RenewAll(ctx context.Context) []Renewal {
	m.mu.Lock()
	ids := make([]spiffe.ID, 0, len(m.certs))
	for id := range m.certs {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
	out := make([]Renewal, 0, len(ids))
	for _, id := range ids {
		r := Renewal{Identity: id.String(), PreviousSerial: m.serial(id)}
		if err := m.renew(ctx, id); err != nil {
			r.Error = err.Error()
		} else {
			r.Serial = m.serial(id)
		}
		out = append(out, r)
	}
	return out
}

// renew runs refresh for id, bounded by both ctx and the identity's own lifetime.
func (m *Manager) renew(ctx context.Context, id spiffe.ID) error {
	m.mu.Lock()
	e := m.certs[id]
	m.mu.Unlock()
	if e == nil {
		return ErrUnknownIdentity // released since RenewAll listed it
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(e.ctx, cancel)()
	return m.refresh(ctx, id, e)
}

func (m *Manager) serial(id spiffe.ID) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.certs[id]; e != nil && e.leaf != nil {
		return serialHex(e.leaf.SerialNumber)
	}
	return ""
}

// renewAt is half way through the certificate's validity, counted from when it was
// received if the CA backdated NotBefore (else a short-lived backdated certificate would be
// renewed at once, in a loop).
func renewAt(leaf *x509.Certificate, received time.Time) time.Time {
	start := leaf.NotBefore
	if received.After(start) {
		start = received
	}
	return start.Add(leaf.NotAfter.Sub(start) / 2)
}

// fetch creates a key and CSR for id and asks the CA for a certificate.
func (m *Manager) fetch(ctx context.Context, id spiffe.ID) (*tls.Certificate, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URI()}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating CSR: %w", err)
	}
	token, err := m.cfg.Token()
	if err != nil {
		return nil, nil, fmt.Errorf("reading service-account token: %w", err)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, pb.AuthorizationMetadataKey, pb.BearerPrefix+token)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := m.cfg.CA.CreateCertificate(ctx, &pb.CreateCertificateRequest{
		Csr:                  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
		ValiditySeconds:      int64(m.cfg.TTL / time.Second),
		ImpersonatedIdentity: id.String(),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("certificate service: %w", err)
	}
	cert, leaf, roots, err := parseResponse(resp, id, key)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate service answer: %w", err)
	}
	m.addRoots(roots)
	return cert, leaf, nil
}

// parseResponse checks that the chain's leaf is for our key and identity.
func parseResponse(resp *pb.CreateCertificateResponse, id spiffe.ID, key *ecdsa.PrivateKey) (*tls.Certificate, *x509.Certificate, []*x509.Certificate, error) {
	chain, err := parsePEMs(resp.GetCertChain())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("cert_chain: %w", err)
	}
	if len(chain) == 0 {
		return nil, nil, nil, errors.New("cert_chain: empty")
	}
	roots, err := parsePEMs(resp.GetRoots())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("roots: %w", err)
	}
	leaf := chain[0]
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, nil, nil, errors.New("cert_chain[0]: not issued for our key")
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		return nil, nil, nil, fmt.Errorf("cert_chain[0]: URI SANs %v, want exactly %s", leaf.URIs, id)
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, leaf, roots, nil
}

// parsePEMs is the certificates of every PEM bundle in order; an error names the
// bundle's index in the answer's list.
func parsePEMs(pems []string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for i, p := range pems {
		certs, err := pemcert.Parse([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		out = append(out, certs...)
	}
	return out, nil
}

func (m *Manager) addRoots(roots []*x509.Certificate) {
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := false
	for _, r := range roots {
		known := false
		for _, have := range m.rootCA {
			if have.Equal(r) {
				known = true
			}
		}
		if !known {
			m.rootCA = append(m.rootCA, r)
			changed = true
		}
	}
	if changed {
		pool := x509.NewCertPool()
		for _, r := range m.rootCA {
			pool.AddCert(r)
		}
		m.roots = pool
	}
}

// CertInfo describes one certificate for the admin dump.
type CertInfo struct {
	Identity  string    `json:"identity"`
	State     string    `json:"state"` // "Available" or "Pending"
	Serial    string    `json:"serial,omitempty"`
	NotBefore time.Time `json:"notBefore,omitzero"`
	NotAfter  time.Time `json:"notAfter,omitzero"`
	RenewAt   time.Time `json:"renewAt,omitzero"`
	Pods      int       `json:"pods"`
	LastError string    `json:"lastError,omitempty"`
}

// Dump lists the identities and their certificates, ordered by identity.
func (m *Manager) Dump() []CertInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]CertInfo, 0, len(m.certs))
	for id, e := range m.certs {
		ci := CertInfo{Identity: id.String(), State: "Pending", Pods: e.refs}
		if e.leaf != nil {
			ci.State = "Available"
			ci.Serial = serialHex(e.leaf.SerialNumber)
			ci.NotBefore, ci.NotAfter, ci.RenewAt = e.leaf.NotBefore, e.leaf.NotAfter, e.renewAt
		}
		if e.err != nil {
			ci.LastError = e.err.Error()
		}
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Identity < out[j].Identity })
	return out
}

func serialHex(n *big.Int) string { return n.Text(16) }
