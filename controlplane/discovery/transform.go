package discovery

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The control plane's cache holds every Pod, Service, Namespace and Node of the cluster,
// but translation (controlplane/xds/translate, controlplane/xds/waypoint), the status
// writers (controlplane/status), the field indexes of SetupIndexes and the CA
// (controlplane/identity) read only a few fields of them. The transforms below store only those fields, so the
// memory per pod no longer grows with managedFields, annotations, volumes, environment,
// probes or container statuses. Each keeps a list of fields rather than dropping a list, so
// fields a future Kubernetes adds are not cached either. A reader of a new field must add
// it here: transform_test.go compares every translation of full and transformed objects.
//
// What is kept, besides name, namespace, uid and resourceVersion:
//   - Pod: labels (selectors, enrollment, waypoints, telemetry names), the controller
//     ownerReference (telemetry's workload name), deletionTimestamp (a terminating pod is
//     unhealthy / draining); spec.nodeName, spec.serviceAccountName, spec.hostNetwork,
//     the containers that declare ports with each port's name, number and protocol (named
//     target ports, workload waypoint ports); status.phase, status.podIP(s), and the type
//     and status of the Ready condition.
//   - Service: labels; spec.selector, type, clusterIP(s), and each port's name, protocol,
//     appProtocol, port and targetPort.
//   - Namespace: labels.
//   - Node: nothing more (the control plane reads Node names only).
//
// No annotation of these kinds is read (the fault annotations the waypoint reads are on
// HTTPRoutes, which lose only their managedFields: see controlplane.CacheOptions), so none
// is kept.

// CacheByObject is the control plane's cache setting per kind (cache.Options.ByObject):
// Pods, Services, Namespaces and Nodes are stored through the transforms of this file.
func CacheByObject() map[client.Object]cache.ByObject {
	return map[client.Object]cache.ByObject{
		&corev1.Pod{}:       {Transform: TransformPod},
		&corev1.Service{}:   {Transform: TransformService},
		&corev1.Namespace{}: {Transform: TransformNamespace},
		&corev1.Node{}:      {Transform: TransformNode},
	}
}

// TransformPod is the cache transform of Pods: a new Pod with only the fields the control
// plane reads (see above). Anything but a *corev1.Pod is returned as is. Transforming a
// transformed Pod gives an equal Pod.
func TransformPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	meta := keptMeta(pod.ObjectMeta)
	meta.Labels = pod.Labels
	meta.OwnerReferences = controllerRef(pod.OwnerReferences)
	meta.DeletionTimestamp = pod.DeletionTimestamp
	return &corev1.Pod{
		TypeMeta:   pod.TypeMeta,
		ObjectMeta: meta,
		Spec: corev1.PodSpec{
			NodeName:           pod.Spec.NodeName,
			ServiceAccountName: pod.Spec.ServiceAccountName,
			HostNetwork:        pod.Spec.HostNetwork,
			Containers:         containerPorts(pod.Spec.Containers),
		},
		Status: corev1.PodStatus{
			Phase:      pod.Status.Phase,
			PodIP:      pod.Status.PodIP,
			PodIPs:     pod.Status.PodIPs,
			Conditions: readyCondition(pod.Status.Conditions),
		},
	}, nil
}

// TransformService is the cache transform of Services (see above). Anything but a
// *corev1.Service is returned as is.
func TransformService(obj any) (any, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	var ports []corev1.ServicePort
	for _, sp := range svc.Spec.Ports {
		ports = append(ports, corev1.ServicePort{
			Name: sp.Name, Protocol: sp.Protocol, AppProtocol: sp.AppProtocol, Port: sp.Port, TargetPort: sp.TargetPort,
		})
	}
	meta := keptMeta(svc.ObjectMeta)
	meta.Labels = svc.Labels
	return &corev1.Service{
		TypeMeta:   svc.TypeMeta,
		ObjectMeta: meta,
		Spec: corev1.ServiceSpec{
			Selector:   svc.Spec.Selector,
			Type:       svc.Spec.Type,
			ClusterIP:  svc.Spec.ClusterIP,
			ClusterIPs: svc.Spec.ClusterIPs,
			Ports:      ports,
		},
	}, nil
}

// TransformNamespace is the cache transform of Namespaces: identity and labels. Anything
// but a *corev1.Namespace is returned as is.
func TransformNamespace(obj any) (any, error) {
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return obj, nil
	}
	meta := keptMeta(ns.ObjectMeta)
	meta.Labels = ns.Labels
	return &corev1.Namespace{TypeMeta: ns.TypeMeta, ObjectMeta: meta}, nil
}

// TransformNode is the cache transform of Nodes: identity only (a Node's status, with its
// image list, is the largest part of it). Anything but a *corev1.Node is returned as is.
func TransformNode(obj any) (any, error) {
	node, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{TypeMeta: node.TypeMeta, ObjectMeta: keptMeta(node.ObjectMeta)}, nil
}

// keptMeta is the metadata every transformed object keeps: its identity and
// resourceVersion (which tells a changed object from a resent one).
func keptMeta(in metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: in.Name, Namespace: in.Namespace, UID: in.UID, ResourceVersion: in.ResourceVersion}
}

// controllerRef keeps the controller among the owner references: the only one telemetry
// reads (translate.WorkloadName).
func controllerRef(refs []metav1.OwnerReference) []metav1.OwnerReference {
	for _, ref := range refs {
		if ref.Controller != nil && *ref.Controller {
			return []metav1.OwnerReference{ref}
		}
	}
	return nil
}

// containerPorts keeps, of the containers that declare ports, their name and each port's
// name, number and protocol; containers without ports are dropped.
func containerPorts(containers []corev1.Container) []corev1.Container {
	var out []corev1.Container
	for _, c := range containers {
		if len(c.Ports) == 0 {
			continue
		}
		ports := make([]corev1.ContainerPort, 0, len(c.Ports))
		for _, p := range c.Ports {
			ports = append(ports, corev1.ContainerPort{Name: p.Name, ContainerPort: p.ContainerPort, Protocol: p.Protocol})
		}
		out = append(out, corev1.Container{Name: c.Name, Ports: ports})
	}
	return out
}

// readyCondition keeps the type and status of the Ready condition: readers ask only
// whether the pod is ready.
func readyCondition(conds []corev1.PodCondition) []corev1.PodCondition {
	for _, c := range conds {
		if c.Type == corev1.PodReady {
			return []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return nil
}
