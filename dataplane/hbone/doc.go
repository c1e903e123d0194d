// Package hbone implements HBONE, the mesh's tunnel: HTTP/2 CONNECT over
// mutual TLS 1.3 (ALPN h2) between workloads identified by SPIFFE IDs. The
// wire format is golang.org/x/net/http2's Framer and hpack; the connection
// (the session, see "Inside a connection") is our own, because x/net's generic Server and Transport hand every frame between
// several goroutines and copy it twice more, which on a small node was most
// of a new connection's and a small message's added latency.
//
// # Identities and certificates
//
// Certificates come from a CertSource, asked at every handshake, so a renewed
// certificate is used by new connections while open ones carry on; the trust
// bundle comes from a RootsSource (Bundle can be swapped at any time).
// CertStore is a ready CertSource whose Certificate waits until Put (lazy
// start). Peers are verified against the bundle of the moment; the leaf must
// carry exactly one SPIFFE URI SAN. A client additionally requires the SAN to
// equal the identity it expects (IdentityMismatchError otherwise); a server
// accepts any identity of the bundle and hands it to its Handler.
//
//	ServerTLSConfig(local spiffe.ID, certs CertSource, roots RootsSource) *tls.Config
//	ClientTLSConfig(local, peer spiffe.ID, certs CertSource, roots RootsSource) *tls.Config
//	VerifyPeer(chain []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage, now time.Time) (spiffe.ID, error)
//
// # Server
//
// One Server per local identity (the ztunnel opens 15008 in each pod's netns
// and runs one Server there):
//
//	srv, _ := hbone.NewServer(hbone.ServerConfig{Identity: podID, Certs: store, Roots: bundle, Handler: h})
//	go srv.Serve(listener)        // or srv.ServeConn(c) per accepted conn
//	srv.Shutdown(ctx)             // GOAWAY, wait for streams; srv.Close() resets everything
//
// Only CONNECT is served (else 405); :authority must be a literal IP:port
// (else 400); a malformed request is reset (see Abuse limits). The Handler sees the verified peer identity, the target and the
// headers (Forwarded, baggage, traceparent) and decides:
//
//	func (z *ztunnel) ServeHBONE(ctx context.Context, req *hbone.Request) error {
//		if !z.allowed(req.Peer, req.Target) {
//			return hbone.Reject(http.StatusForbidden, "denied by policy %s", name)
//		}
//		up, err := z.dialInPodNetns(ctx, req.Target)
//		if err != nil {
//			return hbone.Reject(http.StatusServiceUnavailable, "connect %s: %v", req.Target, err)
//		}
//		st, err := req.Accept() // 200 only now that the upstream is connected
//		if err != nil {
//			up.Close()
//			return err
//		}
//		z.track(st) // st.Close() resets the stream, e.g. when a policy now denies it
//		var stats hbone.JoinStats
//		err = hbone.Join(st, up, &stats) // returns when both directions are done
//		z.log(req, &stats, err)
//		return nil
//	}
//
// Stream (the server end) is a net.Conn. TCP half-close crosses the tunnel
// both ways: the client's CloseWrite (END_STREAM) gives the upstream a
// CloseWrite while it may keep answering, and the Stream's CloseWrite ends the
// response while the client's upload stays readable. A Handler that returns
// nil after its response ended makes a client still uploading stop
// (RST_STREAM NO_ERROR, RFC 9113 §8.1).
//
// # Abuse limits
//
// A client holding a valid mesh certificate may still be hostile. What one
// connection can take is bounded (limits.go; applied mostly by the reading
// goroutine, session_frames.go):
//
//   - Handlers: at most MaxConcurrentStreams (default 100) run at once. A
//     stream the client resets keeps its slot until its Handler returns;
//     newer streams wait for a slot, and streams past MaxConcurrentStreams
//     open ones are refused (RST_STREAM REFUSED_STREAM).
//   - Rapid reset: streams the client resets before their answer, or makes
//     the server reset (malformed requests, stream flow-control errors,
//     streams past the limit once the client acknowledged it) fill a leaky
//     bucket of 4×MaxConcurrentStreams (400) that drains
//     MaxConcurrentStreams (100) per second. Past it: GOAWAY
//     ENHANCE_YOUR_CALM, and the connection closes.
//   - Control frames (PING and SETTINGS acks, RST_STREAM, WINDOW_UPDATE)
//     queued while the writer is blocked: at most 10,000; past that the
//     connection closes (a GOAWAY could not get through).
//   - Writes: one blocked for WriteTimeout (default 30s; it may fail from
//     half of that) ends the connection: the client does not read.
//   - Header blocks: the header list is limited to 64 KiB; a list slightly
//     over is answered 431, x/net's Framer ends a connection whose block
//     goes well past it (GOAWAY PROTOCOL_ERROR). The frames of one block may
//     take max(MaxReadFrameSize, 1 MiB) on the wire, which stops floods of
//     empty CONTINUATION frames (GOAWAY ENHANCE_YOUR_CALM).
//   - Empty DATA: more than 100 consecutive DATA frames without payload or
//     END_STREAM end the connection (GOAWAY ENHANCE_YOUR_CALM).
//   - Protocol errors end the connection with GOAWAY and the RFC 9113 code:
//     invalid SETTINGS (ENABLE_PUSH other than 0 or 1, MAX_FRAME_SIZE out of
//     range: PROTOCOL_ERROR; INITIAL_WINDOW_SIZE over 2^31-1 or pushing an
//     open stream's window over it: FLOW_CONTROL_ERROR), the connection's
//     window pushed past 2^31-1 (FLOW_CONTROL_ERROR), DATA or RST_STREAM on
//     an idle stream (PROTOCOL_ERROR). A stream's window pushed past 2^31-1
//     resets that stream (FLOW_CONTROL_ERROR).
//   - Malformed requests (RFC 9113 §8.2, §8.3, §8.5): header names not
//     lowercase; connection, keep-alive, proxy-connection,
//     transfer-encoding or upgrade; te other than "trailers"; pseudo-headers
//     after regular ones, repeated or unknown; no :method; a CONNECT without
//     :authority or with :scheme or :path. The stream is reset
//     (RST_STREAM PROTOCOL_ERROR) and the Handler never sees it.
//   - Idle and silent clients: GOAWAY after IdleTimeout without streams
//     (default 10 minutes); a PING after PingInterval (30s) of silence that
//     must be answered within PingTimeout (15s); the TLS handshake must end
//     within HandshakeTimeout (10s) and the client preface come within 10s.
//
// A Server serves at most MaxConnections (default 4096) connections, of
// which at most MaxPendingHandshakes (default 128) in the TLS handshake;
// it closes more at once. A connection closed for abuse is logged at Info
// ("HBONE connection closed for abuse", with the limit it crossed).
// The control-frame, header-block, empty-DATA and protocol-error limits
// also protect the Pool's connections from a hostile server.
//
// # Client
//
// A Pool dials tunneled streams over shared HTTP/2 connections keyed by
// (source identity, peer identity, HBONE endpoint, source address):
//
//	pool, _ := hbone.NewPool(hbone.PoolConfig{Certs: store, Roots: bundle, Dial: dialFromNetns})
//	c, err := pool.Dial(ctx, hbone.DialRequest{
//		Source: srcID, Peer: dstID,
//		Target: netip.MustParseAddrPort("10.0.1.5:8080"),
//		Via:    netip.MustParseAddrPort("10.0.1.5:15008"), // default Target.Addr():15008
//		Header: http.Header{"Baggage": {...}},
//		Dial:   perDialDialer, SourceAddr: podIP, // optional: dial from another netns
//	})
//
// DialRequest.EarlyData, when the caller already holds the stream's first
// bytes, sends them right after the CONNECT HEADERS instead of a round trip
// later (the server holds them until it accepted; a refused stream drops
// them, a retried dial sends them again). DialRequest.EarlyFrom does the
// same for what arrives on a connection (the app's) while Dial waits for
// the answer. A stream the server did not process (REFUSED_STREAM, or above
// a GOAWAY's last stream) is sent once more, on another connection.
//
// Dial returns once the server answered 200; a refusal is a *StatusError with
// the server's code and reason, a wrong peer an *IdentityMismatchError, a
// refused client certificate the server's TLS alert. The returned *Conn is a
// net.Conn with CloseWrite (END_STREAM), Close (RST_STREAM), ReadFrom,
// ConnectionState and PeerIdentity; RemoteAddr is the target, LocalAddr the
// local end of the HBONE TCP connection. A connection is reused while the
// server's MaxConcurrentStreams allows, another one is opened when it is
// full; idle connections close after PoolConfig.IdleTimeout; PINGs detect
// dead ones. The stream that opens a connection goes at once; others wait
// for the server's SETTINGS (its stream limit) before sharing it.
// Pool.Stats lists connections and stream counts; EarlyBytes what Dial sent
// before the answer.
//
// Deadlines on Conn and Stream behave as in net.Conn (a timed-out Read loses
// no data); a write deadline that passes while a Write waits for flow control
// resets the stream, as in crypto/tls. A Write blocked on the TCP connection
// itself waits for it: keepalive PINGs end a connection whose peer is gone.
//
// # Joining two connections
//
// Join(a, b net.Conn, stats *JoinStats) error is the bidirectional copy both
// ends of the ztunnel use: EOF on one side becomes CloseWrite on the other,
// an error resets both, JoinStats counts bytes while it runs. Copy buffers
// are pooled and grow from 16 KiB to 256 KiB only while data streams; out of
// a tunneled stream the received chunks themselves are written; between two
// TCP connections the kernel splices.
//
// # Inside a connection
//
// A session is one HTTP/2 connection, client or server. Its code is split by
// concern:
//
//   - session.go: the session's state, its start (preface, SETTINGS), frame
//     writes (one write(2) per group of frames, coalesce.go), the queue of
//     control frames the reading goroutine hands to a writer goroutine, and
//     opening and forgetting streams;
//   - session_frames.go: the reading goroutine: frame dispatch, new streams
//     and their request handlers, DATA, the rapid-reset count;
//   - session_flow.go: SETTINGS and flow control (send windows, receive
//     windows returned as readers consume);
//   - session_close.go: GOAWAY, the idle timeout, keepalive PINGs, close;
//   - h2stream.go: one stream (reads, writes, half-close, reset); stream.go
//     and conn.go are its server and client ends.
//
// A stream's state (RFC 9113 §5.1) is kept in flags of h2stream, under the
// session's mutex:
//
//	open                  client: HEADERS (CONNECT) sent; server: a new
//	                      stream's HEADERS received, well formed and within
//	                      the limits (else it is refused or reset and never
//	                      opens)
//	half-closed (remote)  remoteEnd: END_STREAM received (on DATA or HEADERS);
//	                      Read returns what is queued, then io.EOF
//	half-closed (local)   localEnd: END_STREAM sent (CloseWrite, or a
//	                      server's refusal); Write fails
//	closed                both ends: the session forgets the stream (its slot
//	                      is free); what was received stays readable
//	reset                 err, from any state: RST_STREAM received, sent by
//	                      us (a stream-level protocol error; Close, which also
//	                      sets closed; a write deadline passed while waiting
//	                      for window) or the connection lost. Reads and writes
//	                      fail and the queued data is dropped, except after
//	                      the peer's END_STREAM and RST_STREAM(NO_ERROR). The
//	                      session forgets the stream.
//
// A stream counts against the concurrent-stream limit (the peer's on the
// client, MaxConcurrentStreams on the server) until it is forgotten; on a
// server its Handler holds a slot until it returns. The server's answer is
// Accept's 200 or a refusal (status and reason, END_STREAM); when the Handler
// returns, an unanswered stream is refused (500 if the Handler returned nil),
// an answered one is reset after an error, or ended with END_STREAM after
// nil (and RST_STREAM(NO_ERROR) if the client is still uploading). The client
// waits for the answer until response HEADERS with a final status (1xx are
// skipped) or the stream's failure. Frames for streams that are not open:
// DATA on a forgotten stream is dropped, its window given back, and answered
// RST_STREAM(STREAM_CLOSED); DATA after the peer's END_STREAM resets the
// stream (STREAM_CLOSED); DATA or RST_STREAM on an idle stream (an ID above
// every one opened) ends the connection (PROTOCOL_ERROR); late HEADERS of an
// ended stream are ignored. After a GOAWAY no stream opens; a client's
// streams above its last stream ID fail (the Pool retries them), the others
// finish, and the session closes once the last one is forgotten.
//
// # Performance notes
//
// Per byte, a tunnel costs AES-GCM twice and one more TCP hop; the package
// trims the rest: the goroutine that has data writes its frames itself (one
// write(2) per group of frames, TLS records batched by coalesce.go); one
// goroutine per connection reads frames and queues DATA in pooled 64 KiB
// chunks, which the stream's copy loop hands to writev(2) without copying
// them again; when that loop is idle, the reading goroutine writes the DATA
// to its destination socket itself (non-blocking), saving a wake-up per
// message; frames up to 64 KiB out, 1 MiB in, with 4 MiB stream windows.
// Per-stream goroutines (request handlers, Join's second direction, the
// early-data forwarder) come from internal/workers, reused with their stacks
// already grown; workers.SetReuse(false) turns that off for the process
// (AMBIENT_PERF_WORKERS=off in the proxies, docs/performance.md;
// BenchmarkNewStreamWorkers measures it).
// bench_test.go measures throughput and CPU per byte against direct
// loopback TCP, request/response latency and new-stream latency;
// docs/benchmarks.md has the figures.
package hbone
