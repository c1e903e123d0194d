package status

import (
	"context"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	pb "github.com/ambientmesh/ambient-operator/api/workload/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/discovery"
	xdsserver "github.com/ambientmesh/ambient-operator/controlplane/xds/server"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/waypoint"
)

// enforcement gathers what the proxies that must enforce p hold of it.
func (r *PolicyReconciler) enforcement(ctx context.Context, p *meshv1.MeshPolicy, targets []translate.TargetState) (translate.Enforcement, error) {
	if len(p.Spec.TargetRefs) > 0 {
		return r.waypointEnforcement(p, targets), nil
	}
	return r.ztunnelEnforcement(ctx, p)
}

// waypointEnforcement: for each waypoint carrying a target (of any namespace), its Ready
// condition and whether its proxies hold a configuration built from this generation of
// the policy that serves the targets it carries.
func (r *PolicyReconciler) waypointEnforcement(p *meshv1.MeshPolicy, targets []translate.TargetState) translate.Enforcement {
	var enf translate.Enforcement
	key := p.Namespace + "/" + p.Name
	for _, t := range targets {
		ref := t.Waypoint
		if ref.Name == "" || slices.ContainsFunc(enf.Waypoints, func(w translate.WaypointEnforcement) bool { return w.Waypoint == ref }) {
			continue
		}
		w := translate.WaypointEnforcement{Waypoint: ref, Kind: "Waypoint"}
		if obj := r.Lookup.Waypoint(ref.Namespace, ref.Name); obj != nil {
			w.Kind = translate.WaypointKind(obj)
			w.Ready = meta.FindStatusCondition(obj.Status.Conditions, meshv1.WaypointConditionReady)
		}
		st := r.Proxies.Waypoint(ref.Namespace, ref.Name)
		w.Sent = st.Published && st.Contents.Policies[key] == p.Generation && servesTargets(st.Contents, p.Namespace, targets, ref)
		w.Proxies = proxySync(st.Sync)
		enf.Waypoints = append(enf.Waypoints, w)
	}
	return enf
}

// servesTargets: the configuration has the listeners of every Service target (of the
// policy's namespace) that uses the waypoint (a Waypoint or Namespace target is whatever
// the waypoint serves).
func servesTargets(c xdsserver.WaypointContents, namespace string, targets []translate.TargetState, waypointName types.NamespacedName) bool {
	for _, t := range targets {
		if t.Waypoint == waypointName && t.Ref.Kind == meshv1.TargetKindService && !slices.Contains(c.Services, namespace+"/"+t.Ref.Name) {
			return false
		}
	}
	return true
}

func proxySync(s xdsserver.Sync) translate.ProxySync {
	return translate.ProxySync{Connected: s.Connected, Synced: s.Synced, LastNack: s.LastNack}
}

// ztunnelEnforcement: for each node running a selected workload, whether its ztunnel
// holds the policy's Authorization (the version translation gives this generation) and,
// where ztunnel reads the policy from the Workload (a selector policy's rules are applied
// to the workloads that name it; mtls is the Workload's mode), each selected workload's
// Workload as published, once that Workload reflects the policy.
func (r *PolicyReconciler) ztunnelEnforcement(ctx context.Context, p *meshv1.MeshPolicy) (translate.Enforcement, error) {
	meshWide := p.Spec.Selector == nil && p.Namespace == r.Mesh.RootNamespace
	pods, namespaces, err := r.podsInScope(ctx, p, meshWide)
	if err != nil {
		return translate.Enforcement{}, err
	}
	var mtlsPolicies []meshv1.MeshPolicy
	if p.Spec.MTLS != nil {
		if mtlsPolicies, err = r.policiesInScope(ctx, p, meshWide); err != nil {
			return translate.Enforcement{}, err
		}
	}
	selected := translate.SelectedWorkloads(r.Mesh, p, pods, namespaces)
	authzName := pb.AuthorizationResourceName(p.Namespace, p.Name)
	authz := translate.Authorization(r.Mesh, p)
	var authzVersion string
	if authz != nil {
		authzVersion = xdsserver.ResourceVersion(authz)
	}
	_, publishedAuthz := r.Proxies.Published(pb.AuthorizationTypeURL, authzName)
	authzPublished := authz == nil || (authzVersion != "" && publishedAuthz == authzVersion)
	namesPolicy := p.Spec.Selector != nil && len(p.Spec.Rules) > 0

	type nodeWant struct {
		sent bool
		want map[string]map[string]string
	}
	byNode := map[string]*nodeWant{}
	for _, pod := range selected {
		nw := byNode[pod.Spec.NodeName]
		if nw == nil {
			nw = &nodeWant{sent: authzPublished, want: map[string]map[string]string{}}
			if authz != nil {
				nw.want[pb.AuthorizationTypeURL] = map[string]string{authzName: authzVersion}
			}
			byNode[pod.Spec.NodeName] = nw
		}
		if !namesPolicy && p.Spec.MTLS == nil {
			continue
		}
		published, version := r.Proxies.Published(pb.WorkloadTypeURL, string(pod.UID))
		w, _ := published.(*pb.Workload)
		if w == nil || (namesPolicy && !slices.Contains(w.GetAuthorizationPolicies(), authzName)) ||
			(p.Spec.MTLS != nil && w.GetMtlsMode() != translate.MTLSModeFor(r.Mesh, pod, mtlsPolicies)) {
			nw.sent = false
			continue
		}
		if nw.want[pb.WorkloadTypeURL] == nil {
			nw.want[pb.WorkloadTypeURL] = map[string]string{}
		}
		nw.want[pb.WorkloadTypeURL][w.GetUid()] = version
	}
	enf := translate.Enforcement{Workloads: len(selected)}
	for _, node := range slices.Sorted(maps.Keys(byNode)) {
		nw := byNode[node]
		enf.Nodes = append(enf.Nodes, translate.NodeEnforcement{Node: node, Sent: nw.sent, Proxies: proxySync(r.Proxies.ZTunnel(node, nw.want))})
	}
	return enf, nil
}

// podsInScope lists the pods a policy without targetRefs may select, and their namespaces.
func (r *PolicyReconciler) podsInScope(ctx context.Context, p *meshv1.MeshPolicy, meshWide bool) ([]corev1.Pod, map[string]*corev1.Namespace, error) {
	var pods corev1.PodList
	var nsList corev1.NamespaceList
	namespaces := map[string]*corev1.Namespace{}
	if meshWide {
		if err := r.Client.List(ctx, &pods, client.UnsafeDisableDeepCopy); err != nil {
			return nil, nil, err
		}
		if err := r.Client.List(ctx, &nsList, client.UnsafeDisableDeepCopy); err != nil {
			return nil, nil, err
		}
		for i := range nsList.Items {
			namespaces[nsList.Items[i].Name] = &nsList.Items[i]
		}
		return pods.Items, namespaces, nil
	}
	if err := r.Client.List(ctx, &pods, client.InNamespace(p.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, nil, err
	}
	if ns := r.Lookup.Namespace(p.Namespace); ns != nil {
		namespaces[ns.Name] = ns
	}
	return pods.Items, namespaces, nil
}

// policiesInScope lists the policies whose mtls may apply to the pods p selects.
func (r *PolicyReconciler) policiesInScope(ctx context.Context, p *meshv1.MeshPolicy, meshWide bool) ([]meshv1.MeshPolicy, error) {
	var list meshv1.MeshPolicyList
	if meshWide {
		err := r.Client.List(ctx, &list, client.UnsafeDisableDeepCopy)
		return list.Items, err
	}
	if err := r.Client.List(ctx, &list, client.InNamespace(p.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	out := list.Items
	if r.Mesh.RootNamespace != "" && r.Mesh.RootNamespace != p.Namespace {
		var root meshv1.MeshPolicyList
		if err := r.Client.List(ctx, &root, client.InNamespace(r.Mesh.RootNamespace), client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		out = append(out, root.Items...)
	}
	return out, nil
}

// Map functions: which policies to recompute when something they depend on changes.

// policiesHeldBy maps a change in what an xDS client holds to the policies it enforces:
// a waypoint's to the policies with targetRefs in the namespaces that may use it; a
// ztunnel's to the policies without targetRefs that depend on the type that changed.
func (r *PolicyReconciler) policiesHeldBy(ctx context.Context, c xdsserver.AckChange) []reconcile.Request {
	if ns, _, ok := waypoint.ParseNodeCluster(c.Client.Cluster); ok {
		return r.policiesUsingWaypointsIn(ctx, ns)
	}
	if !strings.HasPrefix(c.Client.NodeID, xdsserver.ZTunnelNodeID("")) {
		return nil
	}
	switch c.TypeURL {
	case "":
		return r.policies(ctx, nil, isZTunnelPolicy)
	case pb.AuthorizationTypeURL:
		return r.policies(ctx, nil, func(p *meshv1.MeshPolicy) bool { return isZTunnelPolicy(p) && len(p.Spec.Rules) > 0 })
	case pb.WorkloadTypeURL:
		return r.policies(ctx, nil, func(p *meshv1.MeshPolicy) bool {
			return isZTunnelPolicy(p) && (p.Spec.MTLS != nil || (p.Spec.Selector != nil && len(p.Spec.Rules) > 0))
		})
	}
	return nil
}

// waypointPoliciesInNamespaceOf: a Service's labels change which waypoint serves it as a
// target (a policy targets Services of its own namespace).
func (r *PolicyReconciler) waypointPoliciesInNamespaceOf(ctx context.Context, o client.Object) []reconcile.Request {
	return r.policies(ctx, []string{o.GetNamespace()}, hasTargetRefs)
}

// policiesUsingWaypointsOf: a Waypoint or waypoint Gateway changes whether it serves the
// targets that name it, and whether it is Ready, for the policies of every namespace
// that may use it.
func (r *PolicyReconciler) policiesUsingWaypointsOf(ctx context.Context, o client.Object) []reconcile.Request {
	return r.policiesUsingWaypointsIn(ctx, o.GetNamespace())
}

// policiesUsingWaypointsIn lists the policies with targetRefs of the namespaces that may
// use a waypoint of namespace (discovery.NamespacesUsingWaypointsOf).
func (r *PolicyReconciler) policiesUsingWaypointsIn(ctx context.Context, namespace string) []reconcile.Request {
	namespaces, err := discovery.NamespacesUsingWaypointsOf(ctx, r.Client, namespace)
	if err != nil {
		return mapFailed(ctx, err, "MeshPolicies of the namespaces that may use a waypoint of "+namespace)
	}
	return r.policies(ctx, namespaces, hasTargetRefs)
}

// policiesOfNamespace: a Namespace's labels choose its waypoint and enroll its pods; for
// the mesh namespace, its policies are mesh-wide.
func (r *PolicyReconciler) policiesOfNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	out := r.policies(ctx, []string{o.GetName()}, func(*meshv1.MeshPolicy) bool { return true })
	if r.Mesh.RootNamespace != "" && o.GetName() != r.Mesh.RootNamespace {
		out = append(out, r.policies(ctx, []string{r.Mesh.RootNamespace}, isZTunnelPolicy)...)
	}
	return out
}

// ztunnelPoliciesOfPod: a pod's labels and node decide which ztunnels must hold the
// policies of its namespace and the mesh-wide ones.
func (r *PolicyReconciler) ztunnelPoliciesOfPod(ctx context.Context, o client.Object) []reconcile.Request {
	namespaces := []string{o.GetNamespace()}
	if r.Mesh.RootNamespace != "" && o.GetNamespace() != r.Mesh.RootNamespace {
		namespaces = append(namespaces, r.Mesh.RootNamespace)
	}
	return r.policies(ctx, namespaces, isZTunnelPolicy)
}

// policies lists the policies of namespaces (all namespaces when nil) that keep holds.
func (r *PolicyReconciler) policies(ctx context.Context, namespaces []string, keep func(*meshv1.MeshPolicy) bool) []reconcile.Request {
	var lists []meshv1.MeshPolicyList
	if namespaces == nil {
		var all meshv1.MeshPolicyList
		if err := r.Client.List(ctx, &all, client.UnsafeDisableDeepCopy); err != nil {
			return mapFailed(ctx, err, "every MeshPolicy")
		}
		lists = append(lists, all)
	}
	for _, ns := range namespaces {
		var list meshv1.MeshPolicyList
		if err := r.Client.List(ctx, &list, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
			return mapFailed(ctx, err, "MeshPolicies of namespace "+ns)
		}
		lists = append(lists, list)
	}
	var out []reconcile.Request
	for _, list := range lists {
		for i := range list.Items {
			if keep(&list.Items[i]) {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
			}
		}
	}
	return out
}

func hasTargetRefs(p *meshv1.MeshPolicy) bool { return len(p.Spec.TargetRefs) > 0 }

func isZTunnelPolicy(p *meshv1.MeshPolicy) bool { return len(p.Spec.TargetRefs) == 0 }

// workloadPlacementChanged passes pod events that can change which nodes run a policy's
// workloads: creation, deletion, and a change of labels, node or phase.
var workloadPlacementChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		before, ok1 := e.ObjectOld.(*corev1.Pod)
		after, ok2 := e.ObjectNew.(*corev1.Pod)
		if !ok1 || !ok2 {
			return true
		}
		return before.Spec.NodeName != after.Spec.NodeName || before.Status.Phase != after.Status.Phase ||
			!maps.Equal(before.Labels, after.Labels)
	},
}
