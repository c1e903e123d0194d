// Package manifests renders, as pure functions, the objects of one waypoint
// proxy: a ConfigMap with what the proxy must know of the mesh, a
// ServiceAccount (the waypoint's identity), a Deployment running
// cmd/waypoint, a Service exposing HBONE (15008) and readiness (15021), a
// PodDisruptionBudget when more than one replica must run, and a
// HorizontalPodAutoscaler when autoscaling is set.
//
// A Waypoint and a Gateway of the waypoint GatewayClass both reduce to a
// Proxy and render the same objects. Every object is named after the proxy,
// lives in its namespace and is controlled by its owner (the Waypoint or the
// Gateway), so the garbage collector removes it with the owner.
//
// Not rendered: RBAC (the proxy does not call the Kubernetes API; it talks
// only to the control plane, authenticated by its projected token) and
// Services for individual replicas.
package manifests

import (
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	meshmanifests "github.com/ambientmesh/ambient-operator/controllers/ambientmesh/manifests"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
	"github.com/ambientmesh/ambient-operator/internal/versions"
)

// ComponentWaypoint is the app.kubernetes.io/component of every waypoint object.
const ComponentWaypoint = "waypoint"

// Keys of the proxy's ConfigMap. The mesh ConfigMap and the control plane's
// CA live in the install namespace, which a pod in another namespace cannot
// mount, so the operator copies them next to the proxy.
const (
	ConfigMapKeyMesh   = meshconfig.ConfigMapKey
	ConfigMapKeyCARoot = "root-cert.pem"
)

// Paths inside the waypoint container. The mesh config and the CA root are
// mounted where ztunnel has them.
const (
	MeshConfigFile = meshconfig.MountPath
	CARootFile     = meshmanifests.CARootFile
	// TokenDir holds the projected service-account token whose audience is
	// the certificate service's (meshconfig.CAAudience).
	TokenDir  = "/var/run/secrets/ambientmesh/tokens"
	TokenFile = TokenDir + "/ambientmesh-ca-token"
)

// PortMetrics serves the proxy's Prometheus metrics; its admin API
// (meshv1alpha1.PortAdmin) listens on localhost only and is not a container port.
const PortMetrics = meshv1alpha1.PortMetrics

const (
	volumeConfig    = "mesh-config"
	volumeCARoot    = "ca-root"
	volumeToken     = "ca-token"
	tokenLifetime   = int64(12 * 60 * 60)
	defaultCPUUsage = int32(80)
)

// Proxy is the desired waypoint proxy, from a Waypoint or a Gateway.
type Proxy struct {
	Name      string
	Namespace string
	// Owner is the controller reference every object gets.
	Owner metav1.OwnerReference
	// Replicas is the fixed replica count (nil: 1); ignored with Autoscaling.
	Replicas *int32
	// Autoscaling scales the Deployment with an HPA instead.
	Autoscaling *meshv1alpha1.WaypointAutoscaling
	// Resources of the proxy container; nil: the mesh's
	// spec.waypoint.resources, else the built-in waypoint defaults
	// (a memory limit among them).
	Resources *corev1.ResourceRequirements
}

// Input is everything a rendering depends on.
type Input struct {
	Proxy Proxy
	// Mesh supplies the image override, the log level, scheduling and the
	// default resources (spec.waypoint).
	Mesh *meshv1alpha1.AmbientMesh
	// Version is the mesh version the proxy runs.
	Version string
	// MeshConfig is the mesh ConfigMap's document, copied as is.
	MeshConfig string
	// CARoot is the PEM bundle the proxy verifies the control plane with.
	CARoot string
}

// Render returns the proxy's objects in creation order: what the pods use
// first, then the Deployment, then what refers to it.
func Render(in Input) ([]client.Object, error) {
	switch {
	case in.Mesh == nil:
		return nil, fmt.Errorf("render waypoint %s/%s: no mesh", in.Proxy.Namespace, in.Proxy.Name)
	case in.Version == "":
		return nil, fmt.Errorf("render waypoint %s/%s: no version", in.Proxy.Namespace, in.Proxy.Name)
	case in.Proxy.Owner.UID == "":
		return nil, fmt.Errorf("render waypoint %s/%s: no owner", in.Proxy.Namespace, in.Proxy.Name)
	}
	objs := []client.Object{configMap(in), serviceAccount(in.Proxy), deployment(in), service(in.Proxy)}
	if pdbNeeded(in.Proxy) {
		objs = append(objs, podDisruptionBudget(in.Proxy))
	}
	if in.Proxy.Autoscaling != nil {
		objs = append(objs, autoscaler(in.Proxy))
	}
	for _, o := range objs {
		o.SetOwnerReferences([]metav1.OwnerReference{in.Proxy.Owner})
	}
	return objs, nil
}

// Args is the waypoint's command line. $(NAME) references are expanded by
// the kubelet from the container's environment.
func Args(mesh *meshv1alpha1.AmbientMesh, name string) []string {
	return []string{
		"--mesh-config=" + MeshConfigFile,
		"--namespace=$(" + meshmanifests.EnvPodNamespace + ")",
		"--pod-name=$(" + meshmanifests.EnvPodName + ")",
		"--name=" + name,
		"--service-account=$(" + meshmanifests.EnvServiceAccount + ")",
		"--ca-root-file=" + CARootFile,
		"--token-file=" + TokenFile,
		"--log-level=" + string(mesh.Spec.Waypoint.EffectiveLogLevel()),
	}
}

// SelectorLabels select a proxy's pods. They never include the version, or
// an upgrade could not change the Deployment.
func SelectorLabels(name string) map[string]string {
	return map[string]string{meshv1alpha1.LabelWaypoint: name}
}

// ObjectLabels are the labels of every object of a proxy. The mesh labels
// let the AmbientMesh controller find waypoint Deployments during an
// upgrade; it never prunes them because the mesh does not control them.
// LabelWaypoint is how the control plane finds a waypoint's Service and pods.
func ObjectLabels(name string) map[string]string {
	l := meshmanifests.MeshLabels(meshv1alpha1.MeshName)
	l[meshmanifests.LabelName] = name
	l[meshmanifests.LabelComponent] = ComponentWaypoint
	l[meshmanifests.LabelPartOf] = meshmanifests.PartOfValue
	l[meshv1alpha1.LabelWaypoint] = name
	return l
}

func objectMeta(p Proxy) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: ObjectLabels(p.Name)}
}

func configMap(in Input) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: objectMeta(in.Proxy),
		Data: map[string]string{
			ConfigMapKeyMesh:   in.MeshConfig,
			ConfigMapKeyCARoot: in.CARoot,
		},
	}
}

func serviceAccount(p Proxy) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: objectMeta(p),
		// The proxy never calls the Kubernetes API.
		AutomountServiceAccountToken: ptr.To(false),
	}
}

func service(p Proxy) *corev1.Service {
	port := func(name string, n int32) corev1.ServicePort {
		return corev1.ServicePort{Name: name, Port: n, TargetPort: intstr.FromInt32(n), Protocol: corev1.ProtocolTCP}
	}
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: objectMeta(p),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: SelectorLabels(p.Name),
			Ports: []corev1.ServicePort{
				port("tcp-hbone", meshv1alpha1.PortHBONE),
				port("http-ready", meshv1alpha1.PortReadiness),
			},
		},
	}
}

func deployment(in Input) *appsv1.Deployment {
	p, spec := in.Proxy, &in.Mesh.Spec.Waypoint
	version := versions.Normalize(in.Version)
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	// The Waypoint's own resources, else the mesh's waypoint defaults, else
	// the built-in ones (whose CPU request is also what CPU autoscaling
	// measures against).
	res := meshmanifests.Resources(versions.Waypoint, p.Resources, spec.Resources)
	container := corev1.Container{
		Name:  "waypoint",
		Image: meshmanifests.Image(*spec, versions.Waypoint, version),
		Args:  Args(in.Mesh, p.Name),
		Env: append([]corev1.EnvVar{
			field(meshmanifests.EnvPodName, "metadata.name"),
			field(meshmanifests.EnvPodNamespace, "metadata.namespace"),
			field(meshmanifests.EnvServiceAccount, "spec.serviceAccountName"),
		}, meshmanifests.GoMemoryLimitEnv(res)...),
		Ports: []corev1.ContainerPort{
			{Name: "hbone", ContainerPort: meshv1alpha1.PortHBONE, Protocol: corev1.ProtocolTCP},
			{Name: "http-monitoring", ContainerPort: PortMetrics, Protocol: corev1.ProtocolTCP},
			{Name: "http-ready", ContainerPort: meshv1alpha1.PortReadiness, Protocol: corev1.ProtocolTCP},
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: meshmanifests.ReadinessPath, Port: intstr.FromInt32(meshv1alpha1.PortReadiness), Scheme: corev1.URISchemeHTTP,
			}},
			PeriodSeconds: 2, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3,
		},
		Resources: res,
		VolumeMounts: []corev1.VolumeMount{
			{Name: volumeConfig, MountPath: meshconfig.MountDir, ReadOnly: true},
			{Name: volumeCARoot, MountPath: meshmanifests.CARootDir, ReadOnly: true},
			{Name: volumeToken, MountPath: TokenDir, ReadOnly: true},
		},
		// Unlike ztunnel the waypoint enters no other network namespace and
		// marks no socket: it needs no privilege at all.
		SecurityContext: &corev1.SecurityContext{
			Privileged:               ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			RunAsNonRoot:             ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
	fromConfigMap := func(volume, key string) corev1.Volume {
		return corev1.Volume{Name: volume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: p.Name},
			Items:                []corev1.KeyToPath{{Key: key, Path: key}},
		}}}
	}
	pod := corev1.PodSpec{
		ServiceAccountName:           p.Name,
		AutomountServiceAccountToken: ptr.To(false),
		Containers:                   []corev1.Container{container},
		Volumes: []corev1.Volume{
			fromConfigMap(volumeConfig, ConfigMapKeyMesh),
			fromConfigMap(volumeCARoot, ConfigMapKeyCARoot),
			{Name: volumeToken, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
					Audience: meshconfig.CAAudience, ExpirationSeconds: ptr.To(tokenLifetime), Path: "ambientmesh-ca-token",
				}}},
			}}},
		},
		NodeSelector: meshmanifests.NodeSelector(spec.NodeSelector),
		Tolerations:  spec.Tolerations,
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr.To(true),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Affinity: meshmanifests.SpreadAcrossNodes(SelectorLabels(p.Name)),
	}
	podLabels := ObjectLabels(p.Name)
	podLabels[meshmanifests.LabelVersion] = version
	// ztunnel must not capture the waypoint's pods: the waypoint
	// terminates and originates HBONE itself.
	podLabels[meshv1alpha1.LabelDataplaneMode] = meshv1alpha1.DataplaneModeNone
	meta := objectMeta(p)
	meta.Labels[meshmanifests.LabelVersion] = version
	d := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta,
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: SelectorLabels(p.Name)},
			// A new pod is ready before an old one goes, so a single-replica
			// waypoint keeps serving through an upgrade.
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)),
					MaxSurge:       ptr.To(intstr.FromInt32(1)),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: map[string]string{
					"prometheus.io/scrape": "true",
					"prometheus.io/port":   strconv.Itoa(int(PortMetrics)),
					"prometheus.io/path":   "/metrics",
				}},
				Spec: pod,
			},
		},
	}
	// With autoscaling the HPA owns the replica count; leaving it out of
	// the applied object hands the field over.
	if p.Autoscaling == nil {
		d.Spec.Replicas = ptr.To(ptr.Deref(p.Replicas, 1))
	}
	return d
}

// pdbNeeded: a budget of one available pod only makes sense when at least
// two run; with one it would block every node drain.
func pdbNeeded(p Proxy) bool {
	if p.Autoscaling != nil {
		return ptr.Deref(p.Autoscaling.MinReplicas, 1) > 1
	}
	return ptr.Deref(p.Replicas, 1) > 1
}

func podDisruptionBudget(p Proxy) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: objectMeta(p),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: ptr.To(intstr.FromInt32(1)),
			Selector:     &metav1.LabelSelector{MatchLabels: SelectorLabels(p.Name)},
		},
	}
}

func autoscaler(p Proxy) *autoscalingv2.HorizontalPodAutoscaler {
	a := p.Autoscaling
	return &autoscalingv2.HorizontalPodAutoscaler{
		TypeMeta:   metav1.TypeMeta{APIVersion: "autoscaling/v2", Kind: "HorizontalPodAutoscaler"},
		ObjectMeta: objectMeta(p),
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: p.Name},
			MinReplicas:    ptr.To(ptr.Deref(a.MinReplicas, 1)),
			MaxReplicas:    a.MaxReplicas,
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.ResourceMetricSourceType,
				Resource: &autoscalingv2.ResourceMetricSource{
					Name: corev1.ResourceCPU,
					Target: autoscalingv2.MetricTarget{
						Type:               autoscalingv2.UtilizationMetricType,
						AverageUtilization: ptr.To(ptr.Deref(a.TargetCPUUtilizationPercentage, defaultCPUUsage)),
					},
				},
			}},
		},
	}
}
