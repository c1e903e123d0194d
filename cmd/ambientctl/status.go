package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

func runStatus(args []string, kubeconfig string, out io.Writer) error {
	fs, c := newFlagSet("status", kubeconfig)
	name := fs.String("name", "default", "AmbientMesh name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cl, err := newClient(c.kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	mesh := &meshv1alpha1.AmbientMesh{}
	if err := cl.Get(ctx, client.ObjectKey{Name: *name}, mesh); err != nil {
		return fmt.Errorf("reading AmbientMesh %q: %w (is the operator installed, and the sample applied?)", *name, err)
	}
	return write(out, c.output, mesh.Status, statusTable(mesh))
}

func newClient(kubeconfig string) (client.Client, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := errors.Join(meshv1alpha1.AddToScheme(scheme), corev1.AddToScheme(scheme)); err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: scheme})
}

// statusTable is the mesh line, one line per component and one per condition.
func statusTable(mesh *meshv1alpha1.AmbientMesh) Table {
	st := mesh.Status
	t := Table{Headers: []string{"KIND", "NAME", "VERSION", "READY", "STATUS", "MESSAGE"}}
	ready := conditionStatus(st.Conditions, "Ready")
	t.Rows = append(t.Rows, []string{"AmbientMesh", mesh.Name, st.Version, ready, string(st.Phase),
		"trust domain " + st.TrustDomain})
	comps := []struct {
		name string
		s    meshv1alpha1.ComponentStatus
	}{{"controlplane", st.Components.ControlPlane}, {"ztunnel", st.Components.ZTunnel}, {"cni", st.Components.CNI}}
	for _, comp := range comps {
		t.Rows = append(t.Rows, []string{"Component", comp.name, comp.s.Version,
			fmt.Sprintf("%d/%d", comp.s.Ready, comp.s.Desired), fmt.Sprintf("%d updated", comp.s.Updated), ""})
	}
	for _, cond := range st.Conditions {
		t.Rows = append(t.Rows, []string{"Condition", cond.Type, "", string(cond.Status), cond.Reason, cond.Message})
	}
	return t
}

func conditionStatus(conds []metav1.Condition, typ string) string {
	for _, c := range conds {
		if c.Type == typ {
			return string(c.Status)
		}
	}
	return "Unknown"
}
