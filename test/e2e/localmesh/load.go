package localmesh

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Load is steady HTTP traffic from a pod: workers that each send one request
// after another on a keep-alive connection, with no retry of any kind. The
// requests are POSTs with a body, which Go's transport never re-sends on its
// own (it silently repeats idempotent requests whose reused connection died),
// so every request the mesh loses is counted.
type Load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	ok       int
	failures []string
}

// StartLoad starts workers sending POST url from inside the pod, each
// pausing interval between requests, until Stop.
func (p *AppPod) StartLoad(url string, workers int, interval time.Duration) *Load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{cancel: cancel}
	netns := p.NetnsPath()
	for i := 0; i < workers; i++ {
		// One transport per worker: one keep-alive connection each, as a
		// pool of long-lived clients would hold.
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: 1,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return DialIn(netns, addr, 5*time.Second)
			},
		}}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer client.CloseIdleConnections()
			for ctx.Err() == nil {
				l.record(send(client, url))
				select {
				case <-ctx.Done():
				case <-time.After(interval):
				}
			}
		}()
	}
	return l
}

// send makes one request and returns why it failed ("" when answered 200).
// The request has no context: Stop waits for it rather than cutting it.
func send(client *http.Client, url string) string {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader("steady load"))
	if err != nil {
		return err.Error()
	}
	req.GetBody = nil // not replayable: the transport must not re-send it
	resp, err := client.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return "reading the body: " + err.Error()
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("status %d", resp.StatusCode)
	}
	return ""
}

func (l *Load) record(failure string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if failure == "" {
		l.ok++
		return
	}
	l.failures = append(l.failures, time.Now().Format("15:04:05.000")+" "+failure)
}

// Counts returns the requests answered 200 so far and the failures.
func (l *Load) Counts() (ok int, failures []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, append([]string(nil), l.failures...)
}

// Stop ends the load once every worker's request in flight has finished.
func (l *Load) Stop() {
	l.cancel()
	l.wg.Wait()
}
