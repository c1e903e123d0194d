package server

import (
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
)

// Publisher feeds translated resources into the linear caches. It drops updates that
// change nothing (so a reconcile that recomputes an unchanged Workload pushes nothing) and
// debounces the rest: changes arriving within one window are applied to each cache in a
// single UpdateResources call, and a resource changed several times in the window is sent
// once, in its last state.
type Publisher struct {
	caches   map[string]resourceCache
	debounce time.Duration
	updates  *prometheus.CounterVec

	mu      sync.Mutex
	current map[string]map[string]proto.Message // type → name → what the cache has or will have
	pending map[string]map[string]proto.Message // type → name → new value; nil = delete
	timer   *time.Timer
}

// resourceCache is the part of cache.LinearCache the publisher uses.
type resourceCache interface {
	UpdateResources(toUpdate map[string]types.Resource, toDelete []string) error
}

func newPublisher(caches map[string]resourceCache, debounce time.Duration, updates *prometheus.CounterVec) *Publisher {
	p := &Publisher{
		caches:   caches,
		debounce: debounce,
		updates:  updates,
		current:  map[string]map[string]proto.Message{},
		pending:  map[string]map[string]proto.Message{},
	}
	for t := range caches {
		p.current[t] = map[string]proto.Message{}
		p.pending[t] = map[string]proto.Message{}
	}
	return p
}

// Set publishes resource name of type typeURL; a nil m removes it. It reports whether
// anything changed. Unknown types are ignored (false).
func (p *Publisher) Set(typeURL, name string, m proto.Message) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	current, ok := p.current[typeURL]
	if !ok {
		return false
	}
	old, had := current[name]
	switch {
	case m == nil && !had:
		return false
	case m != nil && had && proto.Equal(old, m):
		return false
	}
	if m == nil {
		delete(current, name)
	} else {
		current[name] = m
	}
	p.pending[typeURL][name] = m
	p.scheduleLocked()
	return true
}

// Get returns the resource as last published (nil when absent).
func (p *Publisher) Get(typeURL, name string) proto.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.current[typeURL][name]
}

// Names lists the published resource names of a type.
func (p *Publisher) Names(typeURL string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	names := make([]string, 0, len(p.current[typeURL]))
	for n := range p.current[typeURL] {
		names = append(names, n)
	}
	return names
}

func (p *Publisher) scheduleLocked() {
	if p.timer != nil {
		return // a flush is already due; this change rides along
	}
	if p.debounce <= 0 {
		p.flushLocked()
		return
	}
	p.timer = time.AfterFunc(p.debounce, p.Flush)
}

// Flush applies pending changes now.
func (p *Publisher) Flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.flushLocked()
}

func (p *Publisher) flushLocked() {
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	for typeURL, changes := range p.pending {
		if len(changes) == 0 {
			continue
		}
		toUpdate := map[string]types.Resource{}
		var toDelete []string
		for name, m := range changes {
			if m == nil {
				toDelete = append(toDelete, name)
			} else {
				toUpdate[name] = m
			}
		}
		// The linear cache only errors when it cannot version a resource it was given,
		// which is a bug in translation; the stream then reports it to the client.
		_ = p.caches[typeURL].UpdateResources(toUpdate, toDelete)
		p.updates.WithLabelValues(shortType(typeURL)).Add(float64(len(changes)))
		p.pending[typeURL] = map[string]proto.Message{}
	}
}
