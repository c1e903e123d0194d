package identity

import (
	"crypto/sha256"
	"crypto/x509"
	"sync"
	"time"
)

// issuedCerts remembers, for each certificate the CA issued to a node agent for its own
// identity, the pod whose bound token asked for it. A ztunnel that opens its xDS stream
// with that certificate is thereby known to serve that pod's node, without a TokenReview.
// The record lives in this process only: a certificate issued before a restart, or by
// another replica, is bound to its node by the token the ztunnel sends along.
type issuedCerts struct {
	mu    sync.Mutex
	byKey map[[sha256.Size]byte]issuedTo
}

// issuedTo is the pod a certificate was issued to, until the certificate expires.
type issuedTo struct {
	namespace, pod, uid string
	notAfter            time.Time
}

func newIssuedCerts() *issuedCerts {
	return &issuedCerts{byKey: map[[sha256.Size]byte]issuedTo{}}
}

// remember records that leaf was issued to who's pod, and forgets expired certificates
// (a node agent renews at half life, so the record holds about two per ztunnel).
func (c *issuedCerts) remember(leaf *x509.Certificate, who caller) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, to := range c.byKey {
		if now.After(to.notAfter) {
			delete(c.byKey, key)
		}
	}
	c.byKey[sha256.Sum256(leaf.Raw)] = issuedTo{namespace: who.namespace, pod: who.podName, uid: who.podUID, notAfter: leaf.NotAfter}
}

// lookup returns the pod leaf was issued to, if this process issued it.
func (c *issuedCerts) lookup(leaf *x509.Certificate) (issuedTo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	to, ok := c.byKey[sha256.Sum256(leaf.Raw)]
	return to, ok
}
