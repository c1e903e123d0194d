package gateway

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientmesh/ambient-operator/controllers/waypoint"
)

var now = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func listener(name string, protocol gatewayv1.ProtocolType, port int32) gatewayv1.Listener {
	return gatewayv1.Listener{Name: gatewayv1.SectionName(name), Protocol: protocol, Port: port}
}

func gatewayWith(listeners ...gatewayv1.Listener) *gatewayv1.Gateway {
	gw := &gatewayv1.Gateway{}
	gw.Name, gw.Namespace, gw.Generation = "wp", "shop", 2
	gw.Spec.GatewayClassName = ClassName
	gw.Spec.Listeners = listeners
	return gw
}

func TestAccept(t *testing.T) {
	hbone := listener("mesh", ProtocolHBONE, 15008)
	tests := []struct {
		name          string
		gw            *gatewayv1.Gateway
		wantAccepted  bool
		wantReason    gatewayv1.GatewayConditionReason
		wantListeners []string // "name=reason"
	}{
		{
			name: "one HBONE listener on 15008", gw: gatewayWith(hbone),
			wantAccepted: true, wantReason: gatewayv1.GatewayReasonAccepted, wantListeners: []string{"mesh=Accepted"},
		},
		{
			name: "an HTTP listener beside it is ignored", gw: gatewayWith(hbone, listener("web", gatewayv1.HTTPProtocolType, 80)),
			wantAccepted: true, wantReason: gatewayv1.GatewayReasonListenersNotValid,
			wantListeners: []string{"mesh=Accepted", "web=UnsupportedProtocol"},
		},
		{
			name: "HBONE on another port", gw: gatewayWith(listener("mesh", ProtocolHBONE, 15009)),
			wantReason: gatewayv1.GatewayReasonListenersNotValid, wantListeners: []string{"mesh=PortUnavailable"},
		},
		{
			name: "no HBONE listener", gw: gatewayWith(listener("web", gatewayv1.HTTPProtocolType, 80)),
			wantReason: gatewayv1.GatewayReasonListenersNotValid, wantListeners: []string{"web=UnsupportedProtocol"},
		},
		{
			name: "static addresses", gw: func() *gatewayv1.Gateway {
				gw := gatewayWith(hbone)
				gw.Spec.Addresses = []gatewayv1.GatewaySpecAddress{{Value: "10.0.0.1"}}
				return gw
			}(),
			wantReason: gatewayv1.GatewayReasonUnsupportedAddress, wantListeners: []string{"mesh=Accepted"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			acc := accept(tt.gw)
			if acc.Accepted.OK != tt.wantAccepted || acc.Accepted.Reason != string(tt.wantReason) {
				t.Errorf("Accepted = %v/%s (%s), want %v/%s", acc.Accepted.OK, acc.Accepted.Reason, acc.Accepted.Message, tt.wantAccepted, tt.wantReason)
			}
			var got []string
			for _, l := range acc.Listeners {
				got = append(got, string(l.Name)+"="+l.Accepted.Reason)
			}
			if strings.Join(got, ",") != strings.Join(tt.wantListeners, ",") {
				t.Errorf("listeners %v, want %v", got, tt.wantListeners)
			}
		})
	}
}

func servingObs(available int32) waypoint.Observation {
	return waypoint.Observation{
		Version:       "0.1.0",
		Deployment:    waypoint.DeploymentState{Exists: true, Desired: 1, Ready: available, Available: available},
		ServiceExists: true, ClusterIPs: []string{"10.0.0.7"}, Hostname: "wp.shop.svc.cluster.local",
	}
}

func TestProgrammed(t *testing.T) {
	accepted := accept(gatewayWith(listener("mesh", ProtocolHBONE, 15008)))
	rejected := accept(gatewayWith(listener("web", gatewayv1.HTTPProtocolType, 80)))
	noIP := servingObs(1)
	noIP.ClusterIPs = nil
	tests := []struct {
		name       string
		acc        acceptance
		obs        waypoint.Observation
		wantOK     bool
		wantReason gatewayv1.GatewayConditionReason
		wantMsg    string
	}{
		{"not accepted", rejected, waypoint.Observation{}, false, gatewayv1.GatewayReasonInvalid, "not accepted"},
		{"no mesh", accepted, waypoint.Observation{NoMesh: "there is no AmbientMesh default"}, false, gatewayv1.GatewayReasonPending, "no AmbientMesh"},
		{"apply failed", accepted, waypoint.Observation{Err: errors.New("boom")}, false, gatewayv1.GatewayReasonPending, "boom"},
		{"no address yet", accepted, noIP, false, gatewayv1.GatewayReasonAddressNotAssigned, "cluster IP"},
		{"no replica available", accepted, servingObs(0), false, gatewayv1.GatewayReasonPending, "0/1 replicas available"},
		{"serving", accepted, servingObs(1), true, gatewayv1.GatewayReasonProgrammed, "0.1.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := programmed(tt.acc, tt.obs, "shop", "wp")
			if v.OK != tt.wantOK || v.Reason != string(tt.wantReason) || !strings.Contains(v.Message, tt.wantMsg) {
				t.Errorf("Programmed = %v/%s (%s), want %v/%s mentioning %q", v.OK, v.Reason, v.Message, tt.wantOK, tt.wantReason, tt.wantMsg)
			}
		})
	}
}

func TestComputeStatus(t *testing.T) {
	gw := gatewayWith(listener("mesh", ProtocolHBONE, 15008), listener("web", gatewayv1.HTTPProtocolType, 80))
	// Another controller's condition must survive.
	gw.Status.Conditions = []metav1.Condition{{Type: "example.com/Audited", Status: metav1.ConditionTrue, Reason: "Audited"}}
	st := computeStatus(gw, accept(gw), servingObs(1), now)

	cond := func(conds []metav1.Condition, t string) string {
		c := meta.FindStatusCondition(conds, t)
		if c == nil {
			return "missing"
		}
		if c.ObservedGeneration != 2 {
			return "stale generation"
		}
		return string(c.Status) + "/" + c.Reason
	}
	for ct, want := range map[string]string{"Accepted": "True/ListenersNotValid", "Programmed": "True/Programmed"} {
		if got := cond(st.Conditions, ct); got != want {
			t.Errorf("Gateway %s = %s, want %s", ct, got, want)
		}
	}
	if c := meta.FindStatusCondition(st.Conditions, "example.com/Audited"); c == nil || c.Reason != "Audited" {
		t.Errorf("another controller's condition was changed: %+v", c)
	}
	wantAddrs := []gatewayv1.GatewayStatusAddress{
		{Type: ptr.To(gatewayv1.IPAddressType), Value: "10.0.0.7"},
		{Type: ptr.To(gatewayv1.HostnameAddressType), Value: "wp.shop.svc.cluster.local"},
	}
	if len(st.Addresses) != 2 || *st.Addresses[0].Type != *wantAddrs[0].Type || st.Addresses[0].Value != wantAddrs[0].Value ||
		*st.Addresses[1].Type != *wantAddrs[1].Type || st.Addresses[1].Value != wantAddrs[1].Value {
		t.Errorf("addresses %+v", st.Addresses)
	}
	if len(st.Listeners) != 2 {
		t.Fatalf("listener statuses %+v, want one per listener", st.Listeners)
	}
	for i, want := range []map[string]string{
		{"Accepted": "True/Accepted", "Programmed": "True/Programmed", "ResolvedRefs": "True/ResolvedRefs", "Conflicted": "False/NoConflicts"},
		{"Accepted": "False/UnsupportedProtocol", "Programmed": "False/Invalid", "ResolvedRefs": "True/ResolvedRefs", "Conflicted": "False/NoConflicts"},
	} {
		ls := st.Listeners[i]
		for ct, w := range want {
			if got := cond(ls.Conditions, ct); got != w {
				t.Errorf("listener %s %s = %s, want %s", ls.Name, ct, got, w)
			}
		}
		if ls.AttachedRoutes != 0 || len(ls.SupportedKinds) != 0 {
			t.Errorf("listener %s: routes attach to Services (GAMMA), not to the waypoint: %+v", ls.Name, ls)
		}
	}
}

func TestClassStatus(t *testing.T) {
	gc := &gatewayv1.GatewayClass{}
	gc.Generation = 4
	st := classStatus(gc, now)
	c := meta.FindStatusCondition(st.Conditions, string(gatewayv1.GatewayClassConditionStatusAccepted))
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != "Accepted" || c.ObservedGeneration != 4 {
		t.Errorf("Accepted = %+v", c)
	}
}
