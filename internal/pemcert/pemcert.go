// Package pemcert parses PEM certificate bundles: the chains and roots the control plane's
// CA issues and reads, and the roots ztunnel receives over xDS.
package pemcert

import (
	"crypto/x509"
	"encoding/pem"
)

// Parse returns the certificates of every CERTIFICATE block in data, in order. Blocks of
// other types are skipped, since a bundle may carry a key or parameters alongside; data
// without any certificate yields none and no error, so the caller decides whether that is
// wrong.
func Parse(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return certs, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
}
