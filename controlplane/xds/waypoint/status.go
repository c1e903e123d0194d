package waypoint

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/controlplane/xds/translate"
)

// ControllerName is the Gateway API controller name under which the control plane reports
// the status of routes attached to Services that use a waypoint.
const ControllerName gatewayv1.GatewayController = "ambientmesh.dev/waypoint-controller"

// RouteReasonNoWaypoint (Accepted=False): the parent Service uses no waypoint, so nothing
// applies the route. An implementation-specific reason, as Gateway API allows.
const RouteReasonNoWaypoint gatewayv1.RouteConditionReason = "NoWaypoint"

// HTTPRouteParentStatuses computes, for each Service parentRef of the route, the
// Accepted and ResolvedRefs conditions this controller reports. Transition times are kept
// from the route's current status when a condition did not change.
func HTTPRouteParentStatuses(r *gatewayv1.HTTPRoute, st *State, now metav1.Time) []gatewayv1.RouteParentStatus {
	c := compileHTTPRoute(r)
	return parentStatuses(routeInfo{
		namespace: r.Namespace, generation: r.Generation, parents: r.Spec.ParentRefs,
		previous: r.Status.Parents, compiled: c,
	}, st, now)
}

// GRPCRouteParentStatuses is HTTPRouteParentStatuses for a GRPCRoute.
func GRPCRouteParentStatuses(r *gatewayv1.GRPCRoute, st *State, now metav1.Time) []gatewayv1.RouteParentStatus {
	c := compileGRPCRoute(r)
	return parentStatuses(routeInfo{
		namespace: r.Namespace, generation: r.Generation, parents: r.Spec.ParentRefs,
		previous: r.Status.Parents, compiled: c,
	}, st, now)
}

type routeInfo struct {
	namespace  string
	generation int64
	parents    []gatewayv1.ParentReference
	previous   []gatewayv1.RouteParentStatus
	compiled   compiledRoute
}

func parentStatuses(r routeInfo, st *State, now metav1.Time) []gatewayv1.RouteParentStatus {
	resolved := resolvedRefsCondition(r, st)
	var out []gatewayv1.RouteParentStatus
	for _, ref := range r.parents {
		if !isServiceRef(ref) || hasParent(out, ref) {
			continue
		}
		ps := gatewayv1.RouteParentStatus{ParentRef: ref, ControllerName: ControllerName}
		var previous []metav1.Condition
		for _, p := range r.previous {
			if p.ControllerName == ControllerName && reflect.DeepEqual(p.ParentRef, ref) {
				previous = p.Conditions
			}
		}
		for _, c := range []metav1.Condition{acceptedCondition(r, ref, st), resolved} {
			c.ObservedGeneration = r.generation
			c.LastTransitionTime = now
			if old := meta.FindStatusCondition(previous, c.Type); old != nil && old.Status == c.Status {
				c.LastTransitionTime = old.LastTransitionTime
			}
			ps.Conditions = append(ps.Conditions, c)
		}
		out = append(out, ps)
	}
	return out
}

func hasParent(list []gatewayv1.RouteParentStatus, ref gatewayv1.ParentReference) bool {
	for _, p := range list {
		if reflect.DeepEqual(p.ParentRef, ref) {
			return true
		}
	}
	return false
}

// acceptedCondition: the route is Accepted by a Service parent when the Service is in the
// route's namespace, exists, has an HTTP port the ref selects, uses a waypoint for
// service traffic, and the route uses nothing the waypoint does not support.
func acceptedCondition(r routeInfo, ref gatewayv1.ParentReference, st *State) metav1.Condition {
	c := metav1.Condition{Type: string(gatewayv1.RouteConditionAccepted), Status: metav1.ConditionFalse}
	reject := func(reason gatewayv1.RouteConditionReason, format string, args ...any) metav1.Condition {
		c.Reason, c.Message = string(reason), fmt.Sprintf(format, args...)
		return c
	}
	ns := refNamespace(r.namespace, ref)
	if ns != r.namespace {
		return reject(gatewayv1.RouteReasonNotAllowedByListeners,
			"Service %s/%s is in another namespace: a waypoint applies only routes in the Service's own namespace", ns, ref.Name)
	}
	svc := st.service(ns, string(ref.Name))
	if svc == nil {
		return reject(gatewayv1.RouteReasonNoMatchingParent, "Service %s/%s does not exist", ns, ref.Name)
	}
	var ports, httpPorts []string
	for _, sp := range svc.Spec.Ports {
		if !translate.IsTCP(sp.Protocol) || (ref.Port != nil && *ref.Port != sp.Port) || (ref.SectionName != nil && string(*ref.SectionName) != sp.Name) {
			continue
		}
		ports = append(ports, fmt.Sprint(sp.Port))
		if PortProtocol(sp) != ProtocolTCP {
			httpPorts = append(httpPorts, fmt.Sprint(sp.Port))
		}
	}
	if len(ports) == 0 {
		return reject(gatewayv1.RouteReasonNoMatchingParent, "Service %s/%s has no TCP port matching the parentRef's port or sectionName", ns, ref.Name)
	}
	if len(httpPorts) == 0 {
		return reject(gatewayv1.RouteReasonNotAllowedByListeners,
			"Service %s/%s port(s) %s carry TCP: set the port's appProtocol to http, http2 or grpc (or name it http-..., http2-... or grpc-...)",
			ns, ref.Name, strings.Join(ports, ", "))
	}
	wp, problem := serviceWaypoint(svc, st)
	if problem != "" {
		return reject(RouteReasonNoWaypoint, "%s; the route is not applied", problem)
	}
	if len(r.compiled.unsupported) > 0 {
		return reject(gatewayv1.RouteReasonUnsupportedValue, "not applied: %s", strings.Join(r.compiled.unsupported, "; "))
	}
	c.Status, c.Reason = metav1.ConditionTrue, string(gatewayv1.RouteReasonAccepted)
	c.Message = fmt.Sprintf("accepted for Service %s/%s port(s) %s, whose traffic %s carries", ns, ref.Name, strings.Join(httpPorts, ", "), wp)
	return c
}

// serviceWaypoint names the waypoint that carries the Service's traffic (Waypoint wp, or
// Gateway wp; namespace/name when it is another namespace's), or explains why none does.
func serviceWaypoint(svc *corev1.Service, st *State) (name, problem string) {
	ns := st.namespace(svc.Namespace)
	ref, ok := WaypointOfService(svc, ns)
	if !ok {
		return "", fmt.Sprintf("Service %s/%s uses no waypoint (label it or its namespace %s=<waypoint>)", svc.Namespace, svc.Name, meshv1.LabelUseWaypoint)
	}
	for i := range st.Waypoints {
		wp := &st.Waypoints[i]
		if wp.Namespace != ref.Namespace || wp.Name != ref.Name {
			continue
		}
		kind := translate.WaypointKind(wp)
		switch {
		case !translate.WaypointAllows(wp, svc.Namespace, ns) && kind == "Gateway":
			return "", fmt.Sprintf("Gateway %s does not allow Services of namespace %s (the allowedRoutes.namespaces of its HBONE listener)", ref, svc.Namespace)
		case !translate.WaypointAllows(wp, svc.Namespace, ns):
			return "", fmt.Sprintf("Waypoint %s does not allow Services of namespace %s (its spec.allowedNamespaces)", ref, svc.Namespace)
		case !servesServices(wp) && kind == "Gateway":
			return "", fmt.Sprintf("Gateway %s does not handle service traffic (its label %s: %s)", ref, meshv1.LabelWaypointFor, wp.Spec.EffectiveFor())
		case !servesServices(wp):
			return "", fmt.Sprintf("Waypoint %s does not handle service traffic (spec.for: %s)", ref, wp.Spec.EffectiveFor())
		}
		if ref.Namespace == svc.Namespace {
			return kind + " " + ref.Name, ""
		}
		return kind + " " + ref.String(), ""
	}
	return "", fmt.Sprintf("Waypoint %s, named by the Service's %s label, does not exist (nor an accepted Gateway of class %s)",
		ref, meshv1.LabelUseWaypoint, translate.WaypointGatewayClass)
}

// resolvedRefsCondition checks every backendRef and mirror backendRef of the route.
func resolvedRefsCondition(r routeInfo, st *State) metav1.Condition {
	var problems []*backendProblem
	for _, rule := range r.compiled.rules {
		for _, b := range rule.backends {
			if _, p := resolveBackend(Mesh{}, st, r.namespace, b.BackendObjectReference); p != nil {
				problems = append(problems, p)
			}
		}
		for _, f := range rule.filters {
			if f.Type == gatewayv1.HTTPRouteFilterRequestMirror && f.RequestMirror != nil {
				if _, p := resolveBackend(Mesh{}, st, r.namespace, f.RequestMirror.BackendRef); p != nil {
					problems = append(problems, p)
				}
			}
		}
	}
	c := metav1.Condition{Type: string(gatewayv1.RouteConditionResolvedRefs)}
	if len(problems) == 0 {
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, string(gatewayv1.RouteReasonResolvedRefs), "every backend reference resolves"
		return c
	}
	var msgs []string
	for _, p := range problems {
		if !slices.Contains(msgs, p.message) {
			msgs = append(msgs, p.message)
		}
	}
	c.Status, c.Reason = metav1.ConditionFalse, string(problems[0].reason)
	c.Message = strings.Join(msgs, "; ") + "; requests to these backends get 500"
	return c
}
