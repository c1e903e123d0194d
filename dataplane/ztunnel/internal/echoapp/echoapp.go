// Package echoapp is the application behind ztunnel's test pods: it answers
// each line with "echo <line>". It counts connections, so a test can tell
// whether ztunnel let a refused client through to the app, and remembers the
// lines it got, so a test can tell which backend a request reached.
package echoapp

import (
	"bufio"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
)

// App is a running echo application.
type App struct {
	mu    sync.Mutex
	conns int
	got   []string
}

// Serve runs an App on l; l is closed when the test ends.
func Serve(t testing.TB, l net.Listener) *App {
	t.Cleanup(func() { l.Close() })
	app := &App{}
	go app.accept(l)
	return app
}

func (a *App) accept(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		a.mu.Lock()
		a.conns++
		a.mu.Unlock()
		go a.echo(c)
	}
}

func (a *App) echo(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		a.mu.Lock()
		a.got = append(a.got, strings.TrimSpace(line))
		a.mu.Unlock()
		if _, err := c.Write([]byte("echo " + line)); err != nil {
			return
		}
	}
}

// Connections is how many connections the app has accepted.
func (a *App) Connections() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.conns
}

// Received reports whether the app got line (without its newline).
func (a *App) Received(line string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Contains(a.got, line)
}
