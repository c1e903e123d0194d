package manifests

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
	"github.com/ambientmesh/ambient-operator/internal/versions"
)

// Probe paths served by every component on its health port.
const ReadinessPath = "/healthz/ready"

const (
	volumeConfig    = "mesh-config"
	volumeTLS       = "tls"
	volumeCARoot    = "ca-root"
	volumeCAToken   = "ca-token"
	volumeHandoff   = "handoff"
	volumeRunDir    = "run-dir"
	volumeCNIBin    = "cni-bin"
	volumeCNIConf   = "cni-conf"
	volumeNetNS     = "netns"
	volumeProc      = "host-proc"
	caTokenLifetime = int64(12 * 60 * 60)
	// systemNodeCritical keeps node agents scheduled under resource pressure:
	// without them enrolled pods on the node lose connectivity.
	systemNodeCritical = "system-node-critical"
)

// Image is the image a component runs: the spec's override, else the
// versions table's image for the version.
func Image(spec meshv1alpha1.ComponentSpec, c versions.Component, version string) string {
	if spec.Image != "" {
		return spec.Image
	}
	return versions.Image(c, version)
}

func controlPlaneService(mesh *meshv1alpha1.AmbientMesh) *corev1.Service {
	port := func(name string, p int32) corev1.ServicePort {
		return corev1.ServicePort{Name: name, Port: p, TargetPort: intstr.FromInt32(p), Protocol: corev1.ProtocolTCP}
	}
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta(mesh, ControlPlaneName, ComponentControlPlane),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: selectorLabels(mesh, ControlPlaneName),
			Ports: []corev1.ServicePort{
				port("grpc-xds", meshconfig.XDSPort),
				port("grpc-ca", meshconfig.CAPort),
				port("http-monitoring", meshconfig.ControlPlaneMonitoringPort),
			},
		},
	}
}

func controlPlanePDB(mesh *meshv1alpha1.AmbientMesh) *policyv1.PodDisruptionBudget {
	// maxUnavailable 1 rather than minAvailable 1: with a single replica a
	// node drain must still be able to evict it.
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: meta(mesh, ControlPlaneName, ComponentControlPlane),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector:       &metav1.LabelSelector{MatchLabels: selectorLabels(mesh, ControlPlaneName)},
		},
	}
}

func controlPlaneDeployment(mesh *meshv1alpha1.AmbientMesh, version string) *appsv1.Deployment {
	spec := &mesh.Spec.ControlPlane
	replicas := ptr.Deref(spec.Replicas, 1)
	res := Resources(versions.ControlPlane, spec.Resources)
	container := corev1.Container{
		Name:  "controlplane",
		Image: Image(spec.ComponentSpec, versions.ControlPlane, version),
		Args:  ControlPlaneArgs(mesh),
		Env:   append(downwardEnv(), GoMemoryLimitEnv(res)...),
		Ports: []corev1.ContainerPort{
			{Name: "grpc-xds", ContainerPort: meshconfig.XDSPort, Protocol: corev1.ProtocolTCP},
			{Name: "grpc-ca", ContainerPort: meshconfig.CAPort, Protocol: corev1.ProtocolTCP},
			{Name: "http-monitoring", ContainerPort: meshconfig.ControlPlaneMonitoringPort, Protocol: corev1.ProtocolTCP},
		},
		ReadinessProbe: httpProbe(meshconfig.ControlPlaneMonitoringPort),
		Resources:      res,
		VolumeMounts: []corev1.VolumeMount{
			{Name: volumeConfig, MountPath: meshconfig.MountDir, ReadOnly: true},
			{Name: volumeTLS, MountPath: TLSDir, ReadOnly: true},
		},
		SecurityContext: restrictedContainer(),
	}
	pod := corev1.PodSpec{
		ServiceAccountName: ControlPlaneName,
		Containers:         []corev1.Container{container},
		Volumes: []corev1.Volume{
			configVolume(),
			{Name: volumeTLS, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: ControlPlaneTLSName}}},
		},
		NodeSelector:    NodeSelector(spec.NodeSelector),
		Tolerations:     spec.Tolerations,
		SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), SeccompProfile: runtimeDefaultSeccomp()},
		Affinity:        SpreadAcrossNodes(selectorLabels(mesh, ControlPlaneName)),
	}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: workloadMeta(mesh, ControlPlaneName, ComponentControlPlane, version),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: selectorLabels(mesh, ControlPlaneName)},
			// The deadline turns a stuck control plane rollout into a
			// Progressing=False condition the upgrade reports as failed.
			ProgressDeadlineSeconds: ptr.To(int32(mesh.Spec.Upgrade.EffectiveNodeReadyTimeout().Seconds())),
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)),
					MaxSurge:       ptr.To(intstr.FromInt32(1)),
				},
			},
			Template: podTemplate(mesh, ControlPlaneName, ComponentControlPlane, version, pod, nil),
		},
	}
}

func ztunnelDaemonSet(mesh *meshv1alpha1.AmbientMesh, version string) *appsv1.DaemonSet {
	spec := &mesh.Spec.ZTunnel
	res := Resources(versions.ZTunnel, spec.Resources)
	container := corev1.Container{
		Name:  "ztunnel",
		Image: Image(spec.ComponentSpec, versions.ZTunnel, version),
		Args:  ZTunnelArgs(mesh),
		Env:   append(downwardEnv(), GoMemoryLimitEnv(res)...),
		Ports: []corev1.ContainerPort{
			{Name: "http-metrics", ContainerPort: meshv1alpha1.PortMetrics, Protocol: corev1.ProtocolTCP},
			{Name: "http-ready", ContainerPort: meshv1alpha1.PortReadiness, Protocol: corev1.ProtocolTCP},
		},
		ReadinessProbe: httpProbe(meshv1alpha1.PortReadiness),
		Resources:      res,
		VolumeMounts: []corev1.VolumeMount{
			{Name: volumeConfig, MountPath: meshconfig.MountDir, ReadOnly: true},
			{Name: volumeHandoff, MountPath: meshconfig.HandoffDir},
			{Name: volumeCAToken, MountPath: CATokenDir, ReadOnly: true},
			{Name: volumeCARoot, MountPath: CARootDir, ReadOnly: true},
		},
		// ztunnel enters pod network namespaces (SYS_ADMIN), opens
		// transparent listeners and sets SO_MARK (NET_ADMIN) and uses raw
		// sockets for the capture path (NET_RAW); nothing else.
		SecurityContext: &corev1.SecurityContext{
			Privileged:               ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			RunAsUser:                ptr.To(int64(0)),
			RunAsNonRoot:             ptr.To(false),
			Capabilities: &corev1.Capabilities{
				Drop: []corev1.Capability{"ALL"},
				Add:  []corev1.Capability{"NET_ADMIN", "SYS_ADMIN", "NET_RAW"},
			},
		},
	}
	pod := corev1.PodSpec{
		ServiceAccountName:            ZTunnelName,
		AutomountServiceAccountToken:  ptr.To(false),
		PriorityClassName:             systemNodeCritical,
		TerminationGracePeriodSeconds: ptr.To(int64(spec.EffectiveDrainPeriod().Seconds())),
		Containers:                    []corev1.Container{container},
		Volumes: []corev1.Volume{
			configVolume(),
			hostPathVolume(volumeHandoff, meshconfig.HandoffDir, corev1.HostPathDirectoryOrCreate),
			{Name: volumeCAToken, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
					Audience: meshconfig.CAAudience, ExpirationSeconds: ptr.To(caTokenLifetime), Path: "token",
				}}},
			}}},
			// Only the CA certificate of the control plane's secret, never its key.
			{Name: volumeCARoot, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: ControlPlaneTLSName,
				Items:      []corev1.KeyToPath{{Key: "ca.crt", Path: "root-cert.pem"}},
			}}},
		},
		NodeSelector: NodeSelector(spec.NodeSelector),
		Tolerations:  nodeAgentTolerations(spec.Tolerations),
	}
	annotations := map[string]string{
		"prometheus.io/scrape": "true",
		"prometheus.io/port":   strconv.Itoa(int(meshv1alpha1.PortMetrics)),
		"prometheus.io/path":   "/metrics",
	}
	strategy := appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType}
	if spec.EffectiveUpdateStrategy() == meshv1alpha1.UpdateRollingUpdate {
		strategy = surgeUpdate()
	}
	return &appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: workloadMeta(mesh, ZTunnelName, ComponentZTunnel, version),
		Spec: appsv1.DaemonSetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: selectorLabels(mesh, ZTunnelName)},
			UpdateStrategy: strategy,
			Template:       podTemplate(mesh, ZTunnelName, ComponentZTunnel, version, pod, annotations),
		},
	}
}

func cniDaemonSet(mesh *meshv1alpha1.AmbientMesh, version string) *appsv1.DaemonSet {
	spec := &mesh.Spec.CNI
	hostToContainer := corev1.MountPropagationHostToContainer
	res := Resources(versions.CNIAgent, spec.Resources)
	container := corev1.Container{
		Name:           "cni-agent",
		Image:          Image(spec.ComponentSpec, versions.CNIAgent, version),
		Args:           CNIAgentArgs(mesh),
		Env:            append(downwardEnv(), GoMemoryLimitEnv(res)...),
		Ports:          []corev1.ContainerPort{{Name: "http-health", ContainerPort: CNIAgentHealthPort, Protocol: corev1.ProtocolTCP}},
		ReadinessProbe: httpProbe(CNIAgentHealthPort),
		Resources:      res,
		VolumeMounts: []corev1.VolumeMount{
			{Name: volumeConfig, MountPath: meshconfig.MountDir, ReadOnly: true},
			{Name: volumeCNIBin, MountPath: HostCNIBinDir},
			{Name: volumeCNIConf, MountPath: HostCNIConfDir},
			{Name: volumeNetNS, MountPath: meshconfig.NetNSDir, MountPropagation: &hostToContainer},
			{Name: volumeRunDir, MountPath: meshconfig.RunDir},
			{Name: volumeProc, MountPath: HostProcDir, ReadOnly: true},
		},
		// Writing rules inside every pod's netns and installing the plugin
		// on the host needs a privileged container.
		SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true), RunAsUser: ptr.To(int64(0))},
	}
	pod := corev1.PodSpec{
		ServiceAccountName:            CNIName,
		HostNetwork:                   true,
		DNSPolicy:                     corev1.DNSClusterFirstWithHostNet,
		PriorityClassName:             systemNodeCritical,
		TerminationGracePeriodSeconds: ptr.To(int64(30)),
		Containers:                    []corev1.Container{container},
		Volumes: []corev1.Volume{
			configVolume(),
			hostPathVolume(volumeCNIBin, spec.EffectiveBinDir(), corev1.HostPathDirectoryOrCreate),
			hostPathVolume(volumeCNIConf, spec.EffectiveConfDir(), corev1.HostPathDirectoryOrCreate),
			hostPathVolume(volumeNetNS, meshconfig.NetNSDir, corev1.HostPathDirectoryOrCreate),
			hostPathVolume(volumeRunDir, meshconfig.RunDir, corev1.HostPathDirectoryOrCreate),
			hostPathVolume(volumeProc, "/proc", corev1.HostPathDirectory),
		},
		NodeSelector: NodeSelector(spec.NodeSelector),
		Tolerations:  nodeAgentTolerations(spec.Tolerations),
	}
	return &appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: workloadMeta(mesh, CNIName, ComponentCNI, version),
		Spec: appsv1.DaemonSetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: selectorLabels(mesh, CNIName)},
			UpdateStrategy: rollingUpdate(),
			Template:       podTemplate(mesh, CNIName, ComponentCNI, version, pod, nil),
		},
	}
}

// workloadMeta adds the version label to a workload's metadata.
func workloadMeta(mesh *meshv1alpha1.AmbientMesh, name, component, version string) metav1.ObjectMeta {
	m := meta(mesh, name, component)
	m.Labels[LabelVersion] = versions.Normalize(version)
	return m
}

// podTemplate labels the pod with its version and stamps the template hash.
func podTemplate(mesh *meshv1alpha1.AmbientMesh, name, component, version string, pod corev1.PodSpec, annotations map[string]string) corev1.PodTemplateSpec {
	labels := objectLabels(mesh, name, component)
	labels[LabelVersion] = versions.Normalize(version)
	t := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: maps.Clone(annotations)},
		Spec:       pod,
	}
	if t.Annotations == nil {
		t.Annotations = map[string]string{}
	}
	t.Annotations[AnnotationTemplateHash] = TemplateHash(t)
	return t
}

// TemplateHash is a short stable hash of a pod template, ignoring any hash
// annotation already on it.
func TemplateHash(t corev1.PodTemplateSpec) string {
	t = *t.DeepCopy()
	delete(t.Annotations, AnnotationTemplateHash)
	data, err := json.Marshal(t)
	if err != nil {
		// A PodTemplateSpec always marshals; keep the function total anyway.
		return "unhashable"
	}
	h := fnv.New64a()
	_, _ = h.Write(data)
	return fmt.Sprintf("%016x", h.Sum64())
}

// surgeUpdate replaces a node's ztunnel by starting the new pod beside the
// old one and deleting the old one once the new one is ready, one node at a
// time. The new ztunnel opens its in-pod listeners with SO_REUSEPORT beside
// the old one's, so no connection is refused during the replacement; without
// the surge the node would have no ztunnel between the old pod's exit and
// the new pod's start.
func surgeUpdate() appsv1.DaemonSetUpdateStrategy {
	return appsv1.DaemonSetUpdateStrategy{
		Type: appsv1.RollingUpdateDaemonSetStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDaemonSet{
			MaxSurge:       ptr.To(intstr.FromInt32(1)),
			MaxUnavailable: ptr.To(intstr.FromInt32(0)),
		},
	}
}

// rollingUpdate replaces one node's pod at a time, the old one first: the CNI
// agent binds host ports, so two cannot run on one node.
func rollingUpdate() appsv1.DaemonSetUpdateStrategy {
	return appsv1.DaemonSetUpdateStrategy{
		Type:          appsv1.RollingUpdateDaemonSetStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromInt32(1))},
	}
}

func downwardEnv() []corev1.EnvVar {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	return []corev1.EnvVar{
		field(EnvNodeName, "spec.nodeName"),
		field(EnvPodName, "metadata.name"),
		field(EnvPodNamespace, "metadata.namespace"),
		field(EnvServiceAccount, "spec.serviceAccountName"),
	}
}

func httpProbe(port int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: ReadinessPath, Port: intstr.FromInt32(port), Scheme: corev1.URISchemeHTTP,
		}},
		PeriodSeconds:    2,
		TimeoutSeconds:   1,
		SuccessThreshold: 1,
		FailureThreshold: 3,
	}
}

func configVolume() corev1.Volume {
	return corev1.Volume{Name: volumeConfig, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: meshconfig.ConfigMapName},
	}}}
}

func hostPathVolume(name, path string, t corev1.HostPathType) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &t}}}
}

// NodeSelector pins a component's pods to Linux nodes, plus the nodes the user selects.
func NodeSelector(user map[string]string) map[string]string {
	s := map[string]string{corev1.LabelOSStable: "linux"}
	maps.Copy(s, user)
	return s
}

// nodeAgentTolerations: node agents run on every node unless the user
// narrows it, so that every node can run enrolled pods.
func nodeAgentTolerations(user []corev1.Toleration) []corev1.Toleration {
	if len(user) > 0 {
		return user
	}
	return []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
}

func restrictedContainer() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		RunAsNonRoot:             ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

func runtimeDefaultSeccomp() *corev1.SeccompProfile {
	return &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
}

// SpreadAcrossNodes prefers a node the selected pods do not run on yet, so replicas
// survive the loss of one node.
func SpreadAcrossNodes(selector map[string]string) *corev1.Affinity {
	return &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
			Weight: 100,
			PodAffinityTerm: corev1.PodAffinityTerm{
				LabelSelector: &metav1.LabelSelector{MatchLabels: selector},
				TopologyKey:   corev1.LabelHostname,
			},
		}},
	}}
}
