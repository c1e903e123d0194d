package manifests

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/ambientmesh/ambient-operator/internal/versions"
)

// EnvGoMemoryLimit is the Go runtime's soft memory limit, in bytes.
const EnvGoMemoryLimit = "GOMEMLIMIT"

// componentDefaults are the requests and memory limit of each component when
// its spec sets no resources. The requests fit a small cluster; the limits
// leave headroom over the peaks in docs/benchmarks.md (docs/api.md,
// "Compute resources", gives the reasoning). There is no CPU limit: a
// throttled proxy adds latency to every connection it carries.
var componentDefaults = map[versions.Component]struct{ cpu, memory, memoryLimit string }{
	versions.ControlPlane: {"100m", "128Mi", "1Gi"},
	versions.ZTunnel:      {"100m", "128Mi", "1Gi"},
	versions.CNIAgent:     {"50m", "64Mi", "256Mi"},
	versions.Waypoint:     {"100m", "128Mi", "512Mi"},
}

// DefaultResources are the resources of component c's container when
// neither its spec nor a mesh-wide default sets any.
func DefaultResources(c versions.Component) corev1.ResourceRequirements {
	d := componentDefaults[c]
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse(d.cpu),
			corev1.ResourceMemory: resource.MustParse(d.memory),
		},
		Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(d.memoryLimit)},
	}
}

// Resources are the first of the user's settings that is set, most specific
// first, else component c's defaults. A user's setting replaces the defaults
// whole, so that requests and limits the user chose are never mixed with
// ones they did not (a default limit below their request would make the pod
// invalid).
func Resources(c versions.Component, settings ...*corev1.ResourceRequirements) corev1.ResourceRequirements {
	for _, s := range settings {
		if s != nil {
			return *s.DeepCopy()
		}
	}
	return DefaultResources(c)
}

// GoMemoryLimitEnv is the GOMEMLIMIT variable for a container with these
// resources: 90% of its memory limit, in bytes, so that the Go runtime
// collects garbage harder as the heap nears the limit instead of being
// killed by the kernel at it; the rest is left for what the Go runtime does
// not count (binary text, thread stacks outside the heap). None without a
// positive memory limit. It is computed here rather than read through the
// downward API because the downward API cannot take 90% of a value.
func GoMemoryLimitEnv(r corev1.ResourceRequirements) []corev1.EnvVar {
	limit, ok := r.Limits[corev1.ResourceMemory]
	if !ok || limit.Sign() <= 0 {
		return nil
	}
	bytes := limit.Value()
	soft := bytes - bytes/10 // 90%, without overflowing near the int64 maximum
	return []corev1.EnvVar{{Name: EnvGoMemoryLimit, Value: strconv.FormatInt(soft, 10)}}
}
