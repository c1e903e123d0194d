package hbone

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ambientmesh/ambient-operator/internal/testca"
)

// Interop with an independent HTTP/2 + TLS implementation: Node.js's
// built-in http2 module (no npm packages).

const nodeClientJS = `
const http2 = require('http2');
const fs = require('fs');
const [port, target, ca, cert, key, wantID] = process.argv.slice(2);
const client = http2.connect('https://127.0.0.1:' + port, {
  ca: fs.readFileSync(ca), cert: fs.readFileSync(cert), key: fs.readFileSync(key),
  minVersion: 'TLSv1.3', ALPNProtocols: ['h2'],
  // The server is identified by its SPIFFE URI SAN, not a host name.
  checkServerIdentity: (host, c) => c.subjectaltname === 'URI:' + wantID ? undefined
    : new Error('server identity ' + c.subjectaltname + ', want URI:' + wantID),
});
const fail = (what) => (e) => { console.log(JSON.stringify({error: what + ': ' + e.message})); process.exit(0); };
client.on('error', fail('session'));
const req = client.request({':method': 'CONNECT', ':authority': target, 'baggage': 'from=node'});
req.on('error', fail('stream'));
let status = 0;
const chunks = [];
req.on('response', (h) => {
  status = h[':status'];
  req.write('hello from node');
  req.end(); // half-close: the echo upstream then closes, ending our stream
});
req.on('data', (d) => chunks.push(d));
req.on('end', () => {
  console.log(JSON.stringify({status, body: Buffer.concat(chunks).toString(),
    alpn: client.alpnProtocol, tls: client.socket.getProtocol()}));
  client.close();
});
`

const nodeServerJS = `
const http2 = require('http2');
const fs = require('fs');
const [ca, cert, key] = process.argv.slice(2);
const server = http2.createSecureServer({
  ca: fs.readFileSync(ca), cert: fs.readFileSync(cert), key: fs.readFileSync(key),
  requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3', ALPNProtocols: ['h2'],
});
server.on('stream', (stream, headers) => {
  if (headers[':method'] !== 'CONNECT') { stream.respond({':status': 405}); stream.end(); return; }
  const peer = stream.session.socket.getPeerCertificate().subjectaltname;
  stream.respond({':status': 200});
  stream.write('peer=' + peer + ' authority=' + headers[':authority'] + '\n');
  stream.on('data', (d) => stream.write(d));
  stream.on('end', () => stream.end());
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
`

func nodeOrSkip(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the Node.js interop test needs it (CI installs nodejs)")
	}
	return node
}

// writePEMs writes the CA, a certificate and its key as PEM files.
func writePEMs(t *testing.T, dir string, ca *testca.CA, cert *tls.Certificate) (caFile, certFile, keyFile string) {
	t.Helper()
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	for file, block := range map[string]*pem.Block{
		caFile:   {Type: "CERTIFICATE", Bytes: ca.Cert.Raw},
		certFile: {Type: "CERTIFICATE", Bytes: cert.Certificate[0]},
		keyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

type nodeResult struct {
	Status int    `json:"status"`
	Body   string `json:"body"`
	ALPN   string `json:"alpn"`
	TLS    string `json:"tls"`
	Error  string `json:"error"`
}

func runNodeClient(t *testing.T, node string, e *env, clientCert *tls.Certificate) nodeResult {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "client.js")
	if err := os.WriteFile(script, []byte(nodeClientJS), 0o600); err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile := writePEMs(t, dir, e.ca, clientCert)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, script, strconv.Itoa(int(e.via.Port())), e.upstream.String(),
		caFile, certFile, keyFile, serverID.String()).Output()
	if err != nil {
		t.Fatalf("node client: %v\n%s", err, out)
	}
	var res nodeResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("node client output %q: %v", out, err)
	}
	return res
}

func TestNodeClientToOurServer(t *testing.T) {
	node := nodeOrSkip(t)
	seen := make(chan *Request, 1)
	e := newEnv(t, envOpts{handler: forwardHandler(seen)})
	res := runNodeClient(t, node, e, e.ca.Issue(t, clientID))
	if res.Error != "" {
		t.Fatalf("node client failed: %s", res.Error)
	}
	if res.Status != 200 || res.Body != "hello from node" || res.ALPN != "h2" || res.TLS != "TLSv1.3" {
		t.Fatalf("node client got %+v, want 200, the echo, h2, TLSv1.3", res)
	}
	req := <-seen
	if req.Peer != clientID || req.Target != e.upstream || req.Header.Get("Baggage") != "from=node" {
		t.Errorf("handler saw peer %s target %s baggage %q", req.Peer, req.Target, req.Header.Get("Baggage"))
	}
}

func TestNodeClientWithUntrustedCertRejected(t *testing.T) {
	node := nodeOrSkip(t)
	seen := make(chan *Request, 1)
	e := newEnv(t, envOpts{handler: forwardHandler(seen)})
	res := runNodeClient(t, node, e, testca.New(t).Issue(t, clientID))
	if res.Error == "" || res.Status == 200 {
		t.Fatalf("node client with an untrusted certificate got %+v", res)
	}
	if len(seen) != 0 {
		t.Fatal("handler ran for an untrusted client")
	}
	t.Logf("node client refused as expected: %s", res.Error)
}

func TestOurClientToNodeServer(t *testing.T) {
	node := nodeOrSkip(t)
	e := newEnv(t, envOpts{})
	dir := t.TempDir()
	script := filepath.Join(dir, "server.js")
	if err := os.WriteFile(script, []byte(nodeServerJS), 0o600); err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile := writePEMs(t, dir, e.ca, e.ca.Issue(t, serverID))
	cmd := exec.Command(node, script, caFile, certFile, keyFile)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }) // killed: Wait reports that
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("node server did not start: %v", err)
	}
	port, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("node server printed %q", line)
	}

	d := e.dialReq()
	d.Target = netip.MustParseAddrPort("10.1.2.3:8080")
	d.Via = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.pool.Dial(ctx, d)
	if err != nil {
		t.Fatalf("Dial node server: %v", err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "hello node"); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	want := "peer=URI:" + clientID.String() + " authority=10.1.2.3:8080\nhello node"
	if string(got) != want {
		t.Fatalf("node server answered %q, want %q", got, want)
	}

	// Expecting another identity from the node server fails the dial.
	d.Peer = otherID
	if c, err := e.pool.Dial(ctx, d); err == nil || !strings.Contains(err.Error(), "peer identity mismatch") {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial expecting %s: %v, want an identity mismatch", otherID, err)
	}
}
