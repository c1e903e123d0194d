package server

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Publisher feeds translated resources into the workload API's caches. It keeps each
// resource as its deterministic encoding (shared with the cache, which sends it as is),
// drops updates that change nothing (so a reconcile that recomputes an unchanged Workload
// pushes nothing) and debounces the rest: changes arriving within one window are applied
// to each cache in a single flush, and a resource changed several times in the window is
// sent once, in its last state.
type Publisher struct {
	caches   map[string]resourceCache
	debounce time.Duration
	updates  *prometheus.CounterVec

	mu      sync.Mutex
	current map[string]map[string]deltaResource // type → name → what the cache has or will have
	pending map[string]map[string]deltaResource // type → name → new state; a zero value removes
	timer   *time.Timer
}

// resourceCache is what the publisher flushes into (deltaCache).
type resourceCache interface {
	apply(changes map[string]deltaResource)
}

func newPublisher(caches map[string]resourceCache, debounce time.Duration, updates *prometheus.CounterVec) *Publisher {
	p := &Publisher{
		caches:   caches,
		debounce: debounce,
		updates:  updates,
		current:  map[string]map[string]deltaResource{},
		pending:  map[string]map[string]deltaResource{},
	}
	for t := range caches {
		p.current[t] = map[string]deltaResource{}
		p.pending[t] = map[string]deltaResource{}
	}
	return p
}

// Set publishes resource name of type typeURL; a nil m removes it. It reports whether
// anything changed. Unknown types are ignored (false), and so is a message that cannot be
// encoded (a string field that is not UTF-8), which would leave the published one as it
// was.
func (p *Publisher) Set(typeURL, name string, m proto.Message) bool {
	var next deltaResource
	if m != nil {
		var err error
		if next, err = encodeResource(m); err != nil {
			return false
		}
	}
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
	case m != nil && had && old.version == next.version:
		return false
	}
	if m == nil {
		delete(current, name)
	} else {
		current[name] = next
	}
	p.pending[typeURL][name] = next
	p.scheduleLocked()
	return true
}

// Get returns the resource as last published, decoded anew (nil when absent).
func (p *Publisher) Get(typeURL, name string) proto.Message {
	m, _ := p.GetWithVersion(typeURL, name)
	return m
}

// GetWithVersion is Get, and the resource's version (ResourceVersion; "" when absent).
func (p *Publisher) GetWithVersion(typeURL, name string) (proto.Message, string) {
	p.mu.Lock()
	r, ok := p.current[typeURL][name]
	p.mu.Unlock()
	if !ok {
		return nil, ""
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(typeURL)
	if err != nil {
		return nil, ""
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(r.raw, m); err != nil {
		return nil, "" // not reached: the bytes are the encoding of such a message
	}
	return m, r.version
}

// Names lists the published resource names of a type.
func (p *Publisher) Names(typeURL string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Collect(maps.Keys(p.current[typeURL]))
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
		p.caches[typeURL].apply(changes)
		p.updates.WithLabelValues(shortType(typeURL)).Add(float64(len(changes)))
		p.pending[typeURL] = map[string]deltaResource{}
	}
}
