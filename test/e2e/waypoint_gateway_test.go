package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/test/e2e/localmesh"
)

const gatewayNamespace = "l7gw"

// TestGatewayWaypoint: a Gateway of class ambientmesh-waypoint, applied with kubectl, is a
// waypoint like a Waypoint: the operator runs it, the control plane configures it, and a
// namespace labelled to use it sends its Services' traffic through it.
func TestGatewayWaypoint(t *testing.T) {
	requireMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	l7, err := mesh.DeployL7(ctx, gatewayNamespace)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range []*localmesh.AppPod{l7.Client, l7.V1, l7.V2} {
			if err := mesh.DeletePod(context.Background(), p); err != nil {
				t.Errorf("deleting pod %s: %v", p, err)
			}
		}
	})
	const name = "gw"
	gateway := fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: %s
  namespace: %s
spec:
  gatewayClassName: ambientmesh-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
`, name, gatewayNamespace)
	if out, err := mesh.Apply(gateway); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Cleanup(func() {
		if _, err := mesh.Kubectl("delete", "gateway", "-n", gatewayNamespace, name, "--wait=true"); err != nil {
			t.Errorf("deleting the Gateway: %v", err)
		}
		eventually(t, time.Minute, "the Gateway's waypoint pods gone", func() error {
			if pods := mesh.WorkloadPods(gatewayNamespace, name); len(pods) > 0 {
				return fmt.Errorf("%d pods left", len(pods))
			}
			return nil
		})
	})
	eventually(t, 90*time.Second, "the Gateway Programmed", func() error {
		out, err := mesh.Kubectl("get", "gateway", "-n", gatewayNamespace, name, "-o", `jsonpath={.status.conditions[?(@.type=="Programmed")].status}`)
		if err != nil || strings.TrimSpace(out) != "True" {
			return fmt.Errorf("Programmed=%q %v", out, err)
		}
		return nil
	})
	if _, err := mesh.Kubectl("label", "namespace", gatewayNamespace, meshv1alpha1.LabelUseWaypoint+"="+name); err != nil {
		t.Fatal(err)
	}
	requests := func() float64 {
		metrics, err := mesh.WaypointGet(gatewayNamespace, name, meshv1alpha1.PortMetrics, "/metrics")
		if err != nil {
			t.Fatalf("reading the Gateway waypoint's metrics: %v", err)
		}
		return localmesh.RequestsTotal(metrics, "istio_requests_total", `reporter="waypoint"`, `response_code="200"`)
	}
	reviews := "http://" + l7.ReviewsAddr + "/"
	eventually(t, 60*time.Second, "GET / through the Gateway waypoint", func() error {
		before := requests()
		r, err := l7.Client.CurlN(ctx, 1, reviews)
		if err != nil || r[0].Code != 200 {
			return fmt.Errorf("%+v %v", r, err)
		}
		if after := requests(); after <= before {
			return fmt.Errorf("answered by %s, but the Gateway's waypoint counted no request", r[0].ServedBy)
		}
		return nil
	})
}
