package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

func statusCommand(g *globalFlags) *cobra.Command {
	var meshName string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "the AmbientMesh: version, phase, components, conditions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, _, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			mesh := &meshv1alpha1.AmbientMesh{}
			if err := cl.Get(ctx, client.ObjectKey{Name: meshName}, mesh); err != nil {
				return fmt.Errorf("reading AmbientMesh %q: %w (is the operator installed, and the sample applied?)", meshName, err)
			}
			return write(cmd.OutOrStdout(), g.output, mesh.Status, statusTable(mesh))
		},
	}
	cmd.Flags().StringVar(&meshName, "mesh", "default", "the AmbientMesh's name")
	return cmd
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
