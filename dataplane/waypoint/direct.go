package waypoint

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/ambientmesh/ambient-operator/internal/ascii"
)

// proxyDirect is the router's last step for the HTTP/1.1 requests h1Client carries
// (forward picks them, see goesDirect): the rules of httputil.ReverseProxy as the
// waypoint configures it, without its per-request copies. ReverseProxy clones the
// request (URL, headers, context with a client trace) and copies every response header
// value one by one; for the waypoint's common request that was about a fifth of its
// allocations. Here the request is copied shallowly and its headers are edited in
// place: after the filters and the mirrors, only the access log reads them again, and
// it reads none that the edits touch (see outboundHeader). Upgrades, streamed request
// bodies, "Expect: 100-continue" and HTTP/2 keep going through ReverseProxy.
func (w *Waypoint) proxyDirect(rw *statusWriter, in *http.Request, ctx context.Context, x *exchange) {
	out := in.WithContext(ctx)
	out.Close = false // the client's "Connection: close" is for its own connection
	if in.ContentLength == 0 {
		out.Body = nil
	}
	out.Header = outboundHeader(in.Header)
	if q := cleanQuery(in.URL.RawQuery); q != in.URL.RawQuery {
		u := *in.URL
		u.RawQuery = q
		out.URL = &u
	}

	resp, err := w.roundTrip(out)
	x.endInterim()
	if err != nil {
		w.upstreamError(rw, out, err)
		return
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Nothing asked for an upgrade: ReverseProxy refuses the answer the same way.
		x.upstreamAnswered(resp)
		resp.Body.Close()
		w.upstreamError(rw, out, errUnrequestedUpgrade)
		return
	}
	removeHopByHop(resp.Header)
	x.upstreamAnswered(resp)
	copyResponse(rw, resp)
}

var errUnrequestedUpgrade = errors.New("the endpoint switched protocols, which the request did not ask for")

// upstreamAnswered records when the endpoint answered and applies the route's response
// header operations (ReverseProxy's ModifyResponse).
func (x *exchange) upstreamAnswered(resp *http.Response) {
	x.upstreamTime = time.Since(x.upstart)
	x.route.ApplyResponse(resp.Header, x.weighted)
}

// copyResponse sends resp to the client as ReverseProxy does: headers (trailers
// announced), the body (flushed at every write when its length is unknown or it is an
// event stream), then the trailers. A failed copy aborts the client's connection
// (http.ErrAbortHandler): the answer cannot be completed.
func copyResponse(rw *statusWriter, resp *http.Response) {
	h := rw.Header()
	copyHeader(h, resp.Header)
	announced := len(resp.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h.Add("Trailer", strings.Join(keys, ", "))
	}
	rw.WriteHeader(resp.StatusCode)
	if err := copyBody(rw, resp.Body, streamed(resp)); err != nil {
		resp.Body.Close()
		panic(http.ErrAbortHandler)
	}
	resp.Body.Close() // fills resp.Trailer
	if len(resp.Trailer) > 0 {
		rw.Flush() // chunked, so that the trailers can follow
	}
	if len(resp.Trailer) == announced {
		copyHeader(h, resp.Trailer)
		return
	}
	for k, vv := range resp.Trailer {
		for _, v := range vv {
			h.Add(http.TrailerPrefix+k, v)
		}
	}
}

// streamed says whether the answer is sent on as it comes (flushed at every write):
// when its length is unknown (a stream) or it is an event stream.
func streamed(resp *http.Response) bool {
	if resp.ContentLength == -1 {
		return true
	}
	base, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	return ascii.EqualFold(strings.TrimSpace(base), "text/event-stream")
}

// copyBody copies the answer's body with a pooled buffer; flush sends the headers at
// once and every piece as it comes. Read errors other than the end, and write errors,
// are returned.
func copyBody(rw *statusWriter, body io.Reader, flush bool) error {
	if flush {
		rw.Flush()
	}
	bp := copyBufferPool.Get().(*[]byte)
	defer copyBufferPool.Put(bp)
	buf := *bp
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, werr := rw.Write(buf[:n]); werr != nil {
				return werr
			}
			if flush {
				rw.Flush()
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// hopByHop are the headers that concern one connection only (RFC 9110 §7.6.1, and
// those RFC 2616 listed), which a proxy does not pass on, as ReverseProxy's list.
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// removeHopByHop deletes the hop-by-hop headers of h and those its Connection names.
func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopByHop {
		delete(h, k)
	}
}

// outboundHeader turns the client's request headers into the upstream's, as the
// waypoint's ReverseProxy does: hop-by-hop headers removed ("TE: trailers" kept), the
// client's Forwarded and X-Forwarded-* removed (the HBONE stream carries Forwarded), and
// no Go User-Agent added. It edits h in place, except when its Connection header could
// name one that the access log reads: then it edits a copy.
func outboundHeader(h http.Header) http.Header {
	if _, ok := h["Connection"]; ok {
		h = h.Clone()
	}
	trailers := httpguts.HeaderValuesContainsToken(h["Te"], "trailers")
	removeHopByHop(h)
	if trailers {
		h["Te"] = []string{"trailers"}
	}
	for _, k := range [...]string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		delete(h, k)
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // Request.Write then sends none
	}
	return h
}

// copyHeader adds src's values to dst. A key dst does not have takes src's slice itself
// (one allocation fewer per header), capped so that an append to either map's slice
// does not show in the other.
func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		switch {
		case len(vv) == 0:
		case len(dst[k]) == 0:
			dst[k] = vv[:len(vv):len(vv)]
		default:
			dst[k] = append(dst[k], vv...)
		}
	}
}

// maxQueryParams is the number of query parameters above which the query is re-encoded
// (net/url parses no more).
const maxQueryParams = 10000

// cleanQuery drops what net/url cannot parse from a query, as ReverseProxy does
// (parameters separated by ';', bad escapes, too many parameters) by re-encoding it;
// a query without any of these is returned unchanged.
func cleanQuery(q string) string {
	if strings.Count(q, "&")+1 > maxQueryParams {
		return reencodeQuery(q)
	}
	for i := 0; i < len(q); {
		switch q[i] {
		case ';':
			return reencodeQuery(q)
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return reencodeQuery(q)
			}
			i += 3
		default:
			i++
		}
	}
	return q
}

func reencodeQuery(q string) string {
	v, _ := url.ParseQuery(q)
	return v.Encode()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// interim passes an informational (1xx) answer of the endpoint on to the client, as
// ReverseProxy does, until the final answer came (http.Transport may report one from
// its own goroutine).
func (x *exchange) interim(code int, header http.Header) error {
	x.interimMu.Lock()
	defer x.interimMu.Unlock()
	if x.interimDone {
		return nil
	}
	h := x.sw.Header()
	copyHeader(h, header)
	x.sw.WriteHeader(code)
	clear(h) // WriteHeader does not clear them for a 1xx answer
	return nil
}

// endInterim stops passing on informational answers: the final one is in.
func (x *exchange) endInterim() {
	x.interimMu.Lock()
	x.interimDone = true
	x.interimMu.Unlock()
}
