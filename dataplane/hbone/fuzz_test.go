package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzParseAuthority: never panics; what it accepts is an IP:port that
// round-trips and has a port in range.
func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"10.0.0.1:80", "[fd00::1]:15008", "example.com:80", "10.0.0.1", ":80", "[::ffff:1.2.3.4]:1", "1.2.3.4:08", "[fe80::1%25eth0]:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := ParseAuthority(s)
		if err != nil {
			return
		}
		if !ap.IsValid() || ap.Port() == 0 || ap.Addr().Zone() != "" || ap.Addr().Is4In6() {
			t.Fatalf("accepted %q as %v", s, ap)
		}
		again, err := ParseAuthority(ap.String())
		if err != nil || again != ap {
			t.Fatalf("%q -> %v does not round-trip: %v, %v", s, ap, again, err)
		}
	})
}

// FuzzServeRequest feeds arbitrary request headers and bodies to a real
// server through real HTTP/2 frames over mTLS (hand-encoded, so the client
// side validates nothing). The handler refuses every request with 403, so
// the server must answer: 405 for non-CONNECT, 400 for a bad authority, 403
// otherwise — or reset a malformed stream — and never crash or accept.
func FuzzServeRequest(f *testing.F) {
	f.Add("CONNECT", "127.0.0.1:8080", "", "", "", "baggage", "k=v", false, []byte("hi"))
	f.Add("GET", "127.0.0.1:8080", "/", "https", "", "", "", true, []byte(nil))
	f.Add("CONNECT", "example.com:443", "", "", "", "", "", false, []byte(nil))
	f.Add("CONNECT", "[::1]:15008", "", "", "websocket", "", "", false, []byte("x"))
	f.Add("CONNECT", "", "", "", "", "forwarded", "for=1.2.3.4", true, []byte(nil))
	f.Add("CONNECT", "1.2.3.4:0", "/x", "http", "", "Bad Header", "\x00", false, []byte{0, 1})
	f.Add("", "", "", "", "", ":weird", "v", true, []byte(nil))

	e := newEnv(f, envOpts{handler: HandlerFunc(func(ctx context.Context, req *Request) error {
		return Reject(http.StatusForbidden, "fuzz: no upstream")
	})})
	fc := &fuzzClient{e: e}
	defer fc.close()

	f.Fuzz(func(t *testing.T, method, authority, path, scheme, protocol, hname, hval string, endStream bool, body []byte) {
		status, err := fc.send(method, authority, path, scheme, protocol, hname, hval, endStream, body)
		if err != nil {
			t.Fatalf("server did not answer: %v", err)
		}
		validConnect := method == http.MethodConnect && path == "" && scheme == "" && protocol == ""
		_, authErr := ParseAuthority(authority)
		switch status {
		case 0: // stream reset or connection error: malformed input refused
		case http.StatusForbidden:
			if !validConnect || authErr != nil {
				t.Fatalf("handler reached for method %q authority %q path %q scheme %q protocol %q", method, authority, path, scheme, protocol)
			}
		case http.StatusMethodNotAllowed:
			if method == http.MethodConnect {
				t.Fatal("405 for CONNECT")
			}
		case http.StatusBadRequest:
			if validConnect && authErr == nil {
				t.Fatalf("400 for a valid CONNECT to %q", authority)
			}
		default:
			t.Fatalf("unexpected status %d", status)
		}
		// The server keeps serving well-formed requests (on a new
		// connection if the input was a connection error).
		status, err = fc.send("CONNECT", "127.0.0.1:1", "", "", "", "", "", false, nil)
		if err == nil && status == 0 {
			fc.tc = nil
			status, err = fc.send("CONNECT", "127.0.0.1:1", "", "", "", "", "", false, nil)
		}
		if err != nil || status != http.StatusForbidden {
			t.Fatalf("server broken after input: status %d, %v", status, err)
		}
	})
}

// fuzzClient speaks raw HTTP/2 frames to the server, reconnecting when the
// server closes the connection after a protocol error.
type fuzzClient struct {
	e      *env
	tc     *tls.Conn
	fr     *http2.Framer
	enc    *hpack.Encoder
	hbuf   bytes.Buffer
	nextID uint32
}

func (c *fuzzClient) close() {
	if c.tc != nil {
		c.tc.Close()
	}
}

func (c *fuzzClient) connect() error {
	c.close()
	tc, err := tls.Dial("tcp", c.e.via.String(), ClientTLSConfig(clientID, serverID, c.e.certs, c.e.bundle))
	if err != nil {
		return err
	}
	if _, err := tc.Write([]byte(http2.ClientPreface)); err != nil {
		return err
	}
	c.tc, c.fr, c.nextID = tc, http2.NewFramer(tc, tc), 1
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.hbuf)
	return c.fr.WriteSettings()
}

// send writes one request and returns its response status (0 if the stream
// or connection was reset).
func (c *fuzzClient) send(method, authority, path, scheme, protocol, hname, hval string, endStream bool, body []byte) (int, error) {
	if c.tc == nil || c.nextID > 1<<30 {
		if err := c.connect(); err != nil {
			return 0, err
		}
	}
	id := c.nextID
	c.nextID += 2
	c.hbuf.Reset()
	for _, kv := range [][2]string{{":method", method}, {":authority", authority}, {":path", path}, {":scheme", scheme}, {":protocol", protocol}, {hname, hval}} {
		if kv[0] != "" && kv[1] != "" || kv[0] == ":method" {
			c.enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
	}
	_ = c.tc.SetDeadline(time.Now().Add(10 * time.Second))
	err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true, EndStream: endStream && len(body) == 0})
	if err == nil && len(body) > 0 {
		err = c.fr.WriteData(id, endStream, body)
	}
	if err != nil {
		c.tc = nil
		return 0, nil // the server already closed the connection on us
	}
	for {
		fr, err := c.fr.ReadFrame()
		if err != nil {
			c.tc = nil
			if _, ok := err.(http2.ConnectionError); ok {
				return 0, nil
			}
			if isTimeout(err) {
				return 0, fmt.Errorf("no answer to stream %d: %w", id, err)
			}
			return 0, nil
		}
		switch fr := fr.(type) {
		case *http2.SettingsFrame:
			if !fr.IsAck() {
				c.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !fr.IsAck() {
				c.fr.WritePing(true, fr.Data)
			}
		case *http2.GoAwayFrame:
			c.tc = nil
			return 0, nil
		case *http2.RSTStreamFrame:
			if fr.StreamID == id {
				return 0, nil
			}
		case *http2.MetaHeadersFrame:
			if fr.StreamID == id {
				return strconv.Atoi(fr.PseudoValue("status"))
			}
		}
	}
}

func isTimeout(err error) bool {
	type timeout interface{ Timeout() bool }
	t, ok := err.(timeout)
	return ok && t.Timeout()
}

// FuzzSessionFrames feeds arbitrary bytes, after a valid preface and SETTINGS,
// to a real server's HTTP/2 session over mTLS: whatever the frames, the server
// must not crash and must go on serving new connections (a well-formed request
// on a fresh connection gets its 403).
func FuzzSessionFrames(f *testing.F) {
	frames := func(write func(fr *http2.Framer)) []byte {
		var b bytes.Buffer
		write(http2.NewFramer(&b, nil))
		return b.Bytes()
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
	enc.WriteField(hpack.HeaderField{Name: ":authority", Value: "127.0.0.1:1"})
	connect := append([]byte(nil), hb.Bytes()...)
	f.Add(frames(func(fr *http2.Framer) { fr.WriteData(1, false, []byte("no such stream")) }))
	f.Add(frames(func(fr *http2.Framer) { fr.WriteWindowUpdate(0, 1<<31-1) }))
	f.Add(frames(func(fr *http2.Framer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: connect, EndHeaders: true})
		fr.WriteWindowUpdate(1, 1<<31-1)
		fr.WriteData(1, true, make([]byte, 1000))
		fr.WriteData(1, false, []byte("after end"))
	}))
	f.Add(frames(func(fr *http2.Framer) {
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1})
	}))
	f.Add(frames(func(fr *http2.Framer) {
		fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: connect, EndHeaders: true})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: connect, EndHeaders: true})
	}))
	f.Add(frames(func(fr *http2.Framer) {
		fr.WritePing(false, [8]byte{1})
		fr.WriteRSTStream(7, http2.ErrCodeCancel)
		fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: connect, EndHeaders: true})
	}))
	f.Add(frames(func(fr *http2.Framer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: connect[:2], EndHeaders: false})
		fr.WriteContinuation(1, true, connect[2:])
		fr.WriteGoAway(0, http2.ErrCodeNo, []byte("bye"))
	}))
	f.Add([]byte{0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01})

	e := newEnv(f, envOpts{handler: HandlerFunc(func(ctx context.Context, req *Request) error {
		return Reject(http.StatusForbidden, "fuzz: no upstream")
	})})
	fc := &fuzzClient{e: e}
	defer fc.close()

	f.Fuzz(func(t *testing.T, input []byte) {
		raw := &fuzzClient{e: e}
		if err := raw.connect(); err != nil {
			t.Fatalf("connect: %v", err)
		}
		_ = raw.tc.SetDeadline(time.Now().Add(50 * time.Millisecond))
		_, _ = raw.tc.Write(input)         // the server may hang up on any byte
		_, _ = io.Copy(io.Discard, raw.tc) // until the server closes or the deadline passes
		raw.close()

		fc.tc = nil // a fresh connection
		status, err := fc.send("CONNECT", "127.0.0.1:1", "", "", "", "", "", false, nil)
		if err != nil || status != http.StatusForbidden {
			t.Fatalf("server broken after input: status %d, %v", status, err)
		}
	})
}

// FuzzValidateRequestHeaders: never panics, and what it accepts follows RFC
// 9113 §8.2, §8.3 and §8.5, checked here rule by rule. The input is a header
// list, one field a line, name and value separated by NUL.
func FuzzValidateRequestHeaders(f *testing.F) {
	for _, s := range []string{
		":method\x00CONNECT\n:authority\x0010.0.0.1:80",
		":method\x00CONNECT\n:authority\x0010.0.0.1:80\nbaggage\x00k=v\nte\x00trailers",
		":method\x00CONNECT\n:authority\x0010.0.0.1:80\nconnection\x00keep-alive",
		":method\x00CONNECT\n:authority\x00a\n:path\x00/",
		":method\x00CONNECT\nx\x00y\n:authority\x00a",
		":method\x00GET\n:scheme\x00https\n:path\x00/",
		":method\x00CONNECT\n:protocol\x00websocket\n:authority\x00a",
		":method\x00CONNECT\n:authority\x00a\nTE\x00gzip",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, list string) {
		var fields []hpack.HeaderField
		for _, line := range strings.Split(list, "\n") {
			name, value, _ := strings.Cut(line, "\x00")
			fields = append(fields, hpack.HeaderField{Name: name, Value: value})
		}
		if validateRequestHeaders(fields) != nil {
			return
		}
		seen := map[string]int{}
		sawRegular := false
		for _, f := range fields {
			switch {
			case f.Name == "" || strings.ContainsAny(f.Name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"):
				t.Fatalf("accepted header name %q", f.Name)
			case strings.HasPrefix(f.Name, ":"):
				if sawRegular {
					t.Fatalf("accepted %s after a regular header", f.Name)
				}
				if !slices.Contains([]string{":method", ":scheme", ":authority", ":path", ":protocol"}, f.Name) {
					t.Fatalf("accepted pseudo-header %s", f.Name)
				}
				if seen[f.Name]++; seen[f.Name] > 1 {
					t.Fatalf("accepted %s twice", f.Name)
				}
			default:
				sawRegular = true
				if slices.Contains([]string{"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}, f.Name) {
					t.Fatalf("accepted connection-specific header %s", f.Name)
				}
				if f.Name == "te" && !strings.EqualFold(strings.TrimSpace(f.Value), "trailers") {
					t.Fatalf("accepted te: %q", f.Value)
				}
			}
		}
		if seen[":method"] != 1 {
			t.Fatal("accepted a request without :method")
		}
		isConnect := slices.Contains(fields, hpack.HeaderField{Name: ":method", Value: "CONNECT"})
		switch {
		case isConnect && seen[":protocol"] == 0 && (seen[":authority"] != 1 || seen[":scheme"]+seen[":path"] != 0):
			t.Fatal("accepted a CONNECT without :authority or with :scheme or :path")
		case !isConnect && (seen[":scheme"] != 1 || seen[":path"] != 1):
			t.Fatal("accepted a request without :scheme or :path")
		}
	})
}
