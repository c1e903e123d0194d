package main

import (
	"errors"
	"net"
	"slices"
	"testing"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/miekg/dns"
)

// upstreamDirectives is CoreDNS's own order (generated from plugin.cfg),
// read before any test replaces it.
var upstreamDirectives = slices.Clone(dnsserver.Directives)

// Our directives are a subsequence of upstream's, each of them a plugin
// this binary links: a Corefile may then name them in any order and
// queries still pass them the way upstream's build runs them.
func TestDirectivesFollowUpstreamOrder(t *testing.T) {
	registered := caddy.ListPlugins()["others"] // "<server type>.<plugin>"
	last := -1
	for _, name := range directives {
		i := slices.Index(upstreamDirectives, name)
		if i < 0 {
			t.Fatalf("directive %q is not one of upstream's: %v", name, upstreamDirectives)
		}
		if i < last {
			t.Errorf("directive %q comes after %q upstream", name, upstreamDirectives[last])
		}
		last = i
		if !slices.Contains(registered, "dns."+name) {
			t.Errorf("directive %q has no registered plugin (missing import?); registered: %v", name, registered)
		}
	}
}

// A server with the build's own directives answers a query through its
// plugin chain (errors, log, loadbalance, cache, forward) from an upstream
// on loopback, and loads health and ready.
func TestServesThroughForward(t *testing.T) {
	upstream := fakeUpstream(t, "192.0.2.7")
	if err := dnsserver.SetDirectives(directives); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dnsserver.Directives = slices.Clone(upstreamDirectives) })
	dnsserver.Quiet = true

	corefile := ".:0 {\n errors\n log\n health 127.0.0.1:0\n ready 127.0.0.1:0\n loadbalance\n cache 30\n forward . " + upstream + "\n}\n"
	instance, err := caddy.Start(caddy.CaddyfileInput{Filepath: "Corefile", Contents: []byte(corefile), ServerTypeName: "dns"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		err := errors.Join(errors.Join(instance.ShutdownCallbacks()...), instance.Stop())
		instance.Wait()
		if err != nil {
			t.Error(err)
		}
	})

	_, port, err := net.SplitHostPort(instance.Servers()[0].LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	query := new(dns.Msg)
	query.SetQuestion("example.org.", dns.TypeA)
	resp, err := dns.Exchange(query, net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 || resp.Answer[0].(*dns.A).A.String() != "192.0.2.7" {
		t.Fatalf("answer %v, want example.org. A 192.0.2.7", resp)
	}
}

// fakeUpstream serves every A query on loopback UDP with ip; it returns its address.
func fakeUpstream(t *testing.T, ip string) string {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := &dns.Server{PacketConn: conn, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A:   net.ParseIP(ip),
		})
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	server.NotifyStartedFunc = func() { close(started) }
	go func() { _ = server.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = server.Shutdown() })
	return conn.LocalAddr().String()
}
