package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// smokeImage is the test application's image (hack/cluster/smokeapp).
const smokeImage = "localhost/ambient-cluster/smokeapp:v1"

const smokeNamespace = "cluster-smoke"

// smokeManifest is what the smoke test applies: a Deployment of the test
// application with one replica per node (spread by the scheduler), a
// readiness probe the kubelet runs over the pod network, and a Service in
// front of it. The image is only in containerd's store: it is never pulled.
func smokeManifest(replicas int) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: smoke
  namespace: %[1]s
spec:
  replicas: %[2]d
  selector:
    matchLabels: {app: smoke}
  template:
    metadata:
      labels: {app: smoke}
    spec:
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector:
          matchLabels: {app: smoke}
      containers:
      - name: app
        image: %[3]s
        imagePullPolicy: Never
        args: [serve, -addr, ":8080"]
        ports:
        - containerPort: 8080
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 2
        securityContext:
          runAsNonRoot: true
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
---
apiVersion: v1
kind: Service
metadata:
  name: smoke
  namespace: %[1]s
spec:
  selector: {app: smoke}
  ports:
  - port: 80
    targetPort: 8080
`, smokeNamespace, replicas, smokeImage)
}

type smokeOptions struct {
	stateDir  string
	k8sBinDir string
	app       string // the smokeapp binary
	timeout   time.Duration
}

// kubectl runs the cluster's kubectl as the admin; stdin may be empty.
type kubectl struct {
	binary, kubeconfig string
}

func (k kubectl) run(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, k.binary, append([]string{"--kubeconfig", k.kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// smoke checks that the cluster in stateDir runs a workload like any other:
// an image imported into containerd runs on every node, becomes Ready,
// its logs are readable, exec works, a Service's ClusterIP reaches every
// replica (across nodes) through kube-proxy, a pod reaches the
// apiserver as its service account, and cluster DNS resolves Services.
func smoke(ctx context.Context, opts smokeOptions) error {
	s, err := loadState(opts.stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no cluster in %s: run `make cluster-up` first", opts.stateDir)
	}
	if err != nil {
		return err
	}
	c := newCluster(opts.stateDir, len(s.Nodes))
	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()
	k := kubectl{binary: filepath.Join(opts.k8sBinDir, "kubectl"), kubeconfig: c.pki.Kubeconfig("admin")}

	tarball := filepath.Join(opts.stateDir, "images", "smokeapp.tar")
	if err := writeImageFile(tarball, imageSpec{Ref: smokeImage, BinaryPath: opts.app, Entrypoint: "/smokeapp", User: "65532:65532"}); err != nil {
		return err
	}
	for _, n := range c.nodes {
		if err := importImage(n, tarball); err != nil {
			return err
		}
	}
	c.logf("imported %s into %d node(s)", smokeImage, len(c.nodes))

	if _, err := k.run(ctx, smokeManifest(len(c.nodes)), "apply", "-f", "-"); err != nil {
		return err
	}
	if _, err := k.run(ctx, "", "-n", smokeNamespace, "rollout", "status", "deployment/smoke", "--timeout=3m"); err != nil {
		return err
	}
	out, err := k.run(ctx, "", "-n", smokeNamespace, "get", "pods", "-l", "app=smoke",
		"-o", `jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP}{"\n"}{end}`)
	if err != nil {
		return err
	}
	pods, err := parsePodLines(out)
	if err != nil {
		return err
	}
	if nodes := podNodes(pods); len(nodes) != len(c.nodes) {
		return fmt.Errorf("replicas run on nodes %v, want one on each of %d", nodes, len(c.nodes))
	}
	c.logf("Ready: %v", pods)

	for _, p := range pods {
		logs, err := k.run(ctx, "", "-n", smokeNamespace, "logs", p.name)
		if err != nil {
			return err
		}
		if !strings.Contains(logs, "smokeapp serving on :8080") {
			return fmt.Errorf("kubectl logs %s: no start line in %q", p.name, logs)
		}
	}
	c.logf("kubectl logs: every replica logged its start")

	clusterIP, err := k.run(ctx, "", "-n", smokeNamespace, "get", "service", "smoke", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		return err
	}
	want := make([]string, 0, len(pods))
	for _, p := range pods {
		want = append(want, "hello from "+p.name)
	}
	for _, from := range pods {
		// Every other replica by pod IP: the pod network, across nodes.
		for _, to := range pods {
			body, err := k.run(ctx, "", "-n", smokeNamespace, "exec", from.name, "--", "/smokeapp", "get", "http://"+to.ip+":8080/")
			if err != nil {
				return err
			}
			if body != "hello from "+to.name {
				return fmt.Errorf("%s -> %s: got %q", from.name, to.ip, body)
			}
		}
		// The ClusterIP, until every replica has answered: kube-proxy
		// balances across all endpoints, on every node.
		seen := map[string]bool{}
		err := poll(ctx, fmt.Sprintf("%s -> service %s reaching every replica", from.name, clusterIP), func() (bool, error) {
			body, err := k.run(ctx, "", "-n", smokeNamespace, "exec", from.name, "--", "/smokeapp", "get", "http://"+clusterIP+"/")
			if err == nil {
				seen[body] = true
			}
			return !slices.ContainsFunc(want, func(w string) bool { return !seen[w] }), nil
		})
		if err != nil {
			return fmt.Errorf("%w (answers so far: %v)", err, seen)
		}
	}
	c.logf("kubectl exec: every replica reached every replica by pod IP and through service %s", clusterIP)

	// In-cluster clients (the operator, next) reach the apiserver through
	// the kubernetes Service with their projected service-account token.
	wantUser := "system:serviceaccount:" + smokeNamespace + ":default"
	for _, p := range pods {
		user, err := k.run(ctx, "", "-n", smokeNamespace, "exec", p.name, "--", "/smokeapp", "whoami")
		if err != nil {
			return err
		}
		if user != wantUser {
			return fmt.Errorf("%s: the apiserver says it is %q, want %q", p.name, user, wantUser)
		}
	}
	c.logf("in-cluster: every replica reached the apiserver at %s as %s", apiServiceIP, wantUser)

	if err := checkClusterDNS(ctx, c, k, pods, clusterIP); err != nil {
		return err
	}

	if _, err := k.run(ctx, "", "delete", "namespace", smokeNamespace, "--wait", "--timeout=2m"); err != nil {
		return err
	}
	c.logf("smoke test passed; namespace %s deleted", smokeNamespace)
	return nil
}

// checkClusterDNS checks that every replica resolves, through its
// resolv.conf and CoreDNS, a Service's full name and (by the search path)
// the smoke Service's short name to their ClusterIPs. It polls: CoreDNS
// learns of the new Service from its watch.
func checkClusterDNS(ctx context.Context, c *cluster, k kubectl, pods []smokePod, smokeIP string) error {
	names := []struct{ name, want string }{
		{"kubernetes.default.svc." + clusterDomain, apiServiceIP},
		{"smoke", smokeIP},
	}
	for _, p := range pods {
		for _, n := range names {
			var got string
			err := poll(ctx, fmt.Sprintf("%s resolving %s to %s", p.name, n.name, n.want), func() (bool, error) {
				out, err := k.run(ctx, "", "-n", smokeNamespace, "exec", p.name, "--", "/smokeapp", "resolve", n.name)
				got = out
				if err != nil {
					got = err.Error()
				}
				return err == nil && out == n.want, nil
			})
			if err != nil {
				return fmt.Errorf("%w (last answer: %s)", err, got)
			}
		}
	}
	c.logf("cluster DNS: every replica resolved %s to %s and smoke to %s", names[0].name, apiServiceIP, smokeIP)
	return nil
}

type smokePod struct{ name, node, ip string }

func parsePodLines(out string) ([]smokePod, error) {
	var pods []smokePod
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) != 3 {
			return nil, fmt.Errorf("pod line %q: want name, node and IP", line)
		}
		pods = append(pods, smokePod{name: fields[0], node: fields[1], ip: fields[2]})
	}
	return pods, nil
}

func podNodes(pods []smokePod) []string {
	var nodes []string
	for _, p := range pods {
		if !slices.Contains(nodes, p.node) {
			nodes = append(nodes, p.node)
		}
	}
	return nodes
}

func writeImageFile(path string, spec imageSpec) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := writeImage(f, spec, runtime.GOARCH); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
