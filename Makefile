# ambient-operator: a sidecar-less service mesh and its operator.
# `make help` lists the targets. Tools are built from source by hack/tools.sh
# (`make tools` builds them all) and cached by version outside the tree.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

MODULE     := github.com/ambientmesh/ambient-operator
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GIT_COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS    := -s -w -X $(MODULE)/internal/version.Version=$(VERSION) -X $(MODULE)/internal/version.GitCommit=$(GIT_COMMIT)

GOOS   := $(shell go env GOOS)
GOARCH := $(shell go env GOARCH)

## Tools (versions live in hack/tools.sh; the envtest version is read from there)
LOCALBIN           := $(CURDIR)/bin
K8S_VERSION        := $(shell sed -nE 's/^K8S_VERSION=([0-9.]+).*/\1/p' hack/tools.sh)
ENVTEST_ASSETS     := $(LOCALBIN)/k8s/$(K8S_VERSION)-$(GOOS)-$(GOARCH)
CONTROLLER_GEN     := $(LOCALBIN)/controller-gen
KUSTOMIZE          := $(LOCALBIN)/kustomize
KUBECTL            := $(LOCALBIN)/kubectl
PROTOC_GEN_GO      := $(LOCALBIN)/protoc-gen-go
PROTOC_GEN_GO_GRPC := $(LOCALBIN)/protoc-gen-go-grpc
GOLANGCI_LINT      := $(LOCALBIN)/golangci-lint

# Every .proto under api/ is compiled next to itself (paths=source_relative).
PROTOS := $(shell find api -name '*.proto' 2>/dev/null | sort)

# Files `make generate manifests` write; verify-gen checks exactly these.
GENERATED := ':(glob)api/**/zz_generated.*.go' ':(glob)api/**/*.pb.go' \
	config/crd/bases config/rbac/role.yaml config/webhook/manifests.yaml \
	bundle bundle.Dockerfile

# -p 2: the proving ground has two cores. -count=1: tests on real parts are not cached.
GO_TEST_FLAGS ?= -count=1 -p 2 -timeout 30m

.DEFAULT_GOAL := help

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage:\n  make \033[36m<target>\033[0m\n"} \
		/^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } \
		/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: generate
generate: controller-gen protoc-gen ## Generate deepcopy code (controller-gen) and protobuf/gRPC Go code for every .proto under api/.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths="./api/..."
ifneq ($(PROTOS),)
	protoc --proto_path=. \
		--plugin=protoc-gen-go=$(PROTOC_GEN_GO) --go_out=. --go_opt=paths=source_relative \
		--plugin=protoc-gen-go-grpc=$(PROTOC_GEN_GO_GRPC) --go-grpc_out=. --go-grpc_opt=paths=source_relative \
		$(PROTOS)
endif

.PHONY: manifests
manifests: controller-gen ## Generate CRDs (config/crd/bases), RBAC (config/rbac/role.yaml) and webhook configuration from markers.
	$(CONTROLLER_GEN) rbac:roleName=ambient-operator crd webhook paths="./..." output:crd:artifacts:config=config/crd/bases

.PHONY: fmt
fmt: golangci-lint ## Format all Go code with the formatters .golangci.yml names (gofmt, goimports).
	$(GOLANGCI_LINT) fmt
	cd hack/cert-manager && GOWORK=off $(GOLANGCI_LINT) fmt --config $(CURDIR)/.golangci.yml

.PHONY: vet
vet: ## Run go vet on the module and on hack/cert-manager (its own module); make lint runs the same analyzers (govet).
	go vet ./...
	cd hack/cert-manager && GOWORK=off go vet .

.PHONY: lint
lint: golangci-lint ## Run golangci-lint (.golangci.yml: go vet, staticcheck, errcheck, gofmt, goimports, ...) on the module and hack/cert-manager.
	$(GOLANGCI_LINT) run
	cd hack/cert-manager && GOWORK=off $(GOLANGCI_LINT) run --config $(CURDIR)/.golangci.yml

.PHONY: lint-fix
lint-fix: golangci-lint ## Run golangci-lint and apply the fixes it can make.
	$(GOLANGCI_LINT) run --fix
	cd hack/cert-manager && GOWORK=off $(GOLANGCI_LINT) run --fix --config $(CURDIR)/.golangci.yml

##@ Testing

.PHONY: verify-gen
verify-gen: generate manifests bundle ## Fail when committed generated code, manifests or the OLM bundle are stale.
	@if ! git diff --quiet -- $(GENERATED); then \
		echo "verify-gen: generated files differ from what is committed; run 'make generate manifests bundle' and commit:"; \
		git diff --stat -- $(GENERATED); exit 1; \
	fi
	@untracked="$$(git ls-files --others --exclude-standard -- $(GENERATED))"; \
	if [ -n "$$untracked" ]; then \
		echo "verify-gen: generated files are not committed; run 'make generate manifests bundle' and commit:"; \
		echo "$$untracked"; exit 1; \
	fi

.PHONY: test
test: tools verify-gen lint ## Run everything: verify-gen, lint, the unit, envtest, netns and e2e suites (real apiserver, etcd, cert-manager), then as root the real-cluster suite (test-cluster) and the Gateway API mesh conformance suite (test-conformance).
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) go test $(GO_TEST_FLAGS) ./...
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory test-cluster test-conformance; \
	else echo "test-cluster and test-conformance not run: they need root (a real cluster of network and mount namespaces); CI runs them as root"; fi

.PHONY: test-unit
test-unit: ## Run the fast tests only (go test -short: the envtest suites skip themselves).
	go test -short -count=1 ./...

.PHONY: test-e2e
test-e2e: tools ## Run the end-to-end suite on the local mesh (root; it builds the component binaries itself).
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) go test -count=1 -timeout 20m -v ./test/e2e/...

##@ Benchmarks

.PHONY: bench-dataplane
bench-dataplane: ## Benchmark ztunnel against direct pod-to-pod traffic (root: netns nodes, real ztunnels); one line per figure.
	go test -count=1 -run '^$$' -bench '^BenchmarkDataplane$$' -benchtime 1x -timeout 20m ./dataplane/ztunnel/nodetest/ \
		| grep -E '^(throughput_ratio_vs_direct|rr_added_latency_p(50|99)_us|new_conn_latency_ratio_p50|ztunnel_rss_mb_100_pods|leaked_(goroutines|fds)_after_10k): '

.PHONY: bench-controlplane
bench-controlplane: tools ## Benchmark the control plane with 10,000 pods in envtest (real binary, cert-manager, ztunnel xDS client), then 1,000 HTTPRoutes on a waypoint (real waypoint config store), then the operator's memory with 10,000 pods (real binary); one line per figure.
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) go test -count=1 -run '^$$' -bench '^Benchmark(ControlPlane|Operator)10kPods$$' -benchtime 1x -timeout 30m ./test/controlplane/bench/ \
		| grep -E '^(pod_to_client_p(50|99)_ms|push_bytes_per_pod_change|controlplane_rss_mb_10k_pods|waypoint_push_ms_p(50|99)|waypoint_push_bytes_per_edit|operator_rss_mb_10k_pods): '
	BENCH_PODS=50000 KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) go test -count=1 -run '^$$' -bench '^BenchmarkControlPlane10kPods$$' -benchtime 1x -timeout 30m ./test/controlplane/bench/ \
		| grep -E '^(pod_to_client_p99_ms_50k|controlplane_rss_mb_50k_pods): '

# fortio, the load generator Istio publishes its numbers with, built once per version into
# bin/ (not a dependency of the module). Releases from v1.69.0 on (v1.75.3 included) need
# grol.io/grol, whose host this machine's module proxy refuses; v1.68.2 is the newest without it.
FORTIO_VERSION := 1.68.2
FORTIO         := $(LOCALBIN)/fortio-$(FORTIO_VERSION)/fortio

$(FORTIO):
	GOBIN=$(dir $@) GOWORK=off go install fortio.org/fortio@v$(FORTIO_VERSION)

.PHONY: bench-waypoint
bench-waypoint: $(FORTIO) ## Benchmark the waypoint (fortio, 1 KB HTTP/1.1) against the L4-only path to the same pods (root: netns nodes, real ztunnels and waypoint); one line per figure.
	FORTIO=$(FORTIO) go test -count=1 -run '^$$' -bench '^BenchmarkWaypoint$$' -benchtime 1x -timeout 20m ./dataplane/ztunnel/nodetest/ \
		| grep -E '^waypoint_(added_latency_p(50|99)_us|cpu_cores_per_1k_rps|rss_mb_at_1k_rps|max_rps_ratio_vs_l4): '

##@ Build

.PHONY: build
build: ## Build every binary under cmd/ into bin/ (static, version stamped; each answers --version).
	@for dir in cmd/*/; do \
		name=$$(basename $$dir); \
		echo "go build -o bin/$$name ./cmd/$$name"; \
		CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(LOCALBIN)/$$name ./cmd/$$name; \
	done

.PHONY: run
run: install ## Install the CRDs, then run the operator from source against the cluster of the current kubeconfig (without its webhooks).
	go run -ldflags "$(LDFLAGS)" ./cmd/operator --metrics-bind-address=:8080 --metrics-secure=false --enable-webhooks=false

## Images: one Dockerfile, one target per image (test/deploy checks it).
CONTAINER_TOOL ?= docker
REGISTRY       ?= ghcr.io/ambientmesh
IMAGE_TAG      ?= $(VERSION)
IMG            ?= $(REGISTRY)/ambient-operator:$(IMAGE_TAG)
# Every Dockerfile stage except the build stage and the operator's.
COMPONENT_IMAGES := $(filter-out build operator,$(shell sed -nE 's/^FROM .* AS ([a-z0-9-]+)$$/\1/p' Dockerfile))
DOCKER_BUILD_ARGS = --build-arg VERSION=$(VERSION) --build-arg GIT_COMMIT=$(GIT_COMMIT)

.PHONY: docker-build
docker-build: ## Build the operator image IMG (Dockerfile target "operator").
	$(CONTAINER_TOOL) build --target operator $(DOCKER_BUILD_ARGS) -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the operator image IMG.
	$(CONTAINER_TOOL) push $(IMG)

.PHONY: images
images: docker-build ## Build every image: the operator (IMG) and each component (REGISTRY/<component>:IMAGE_TAG).
	@for target in $(COMPONENT_IMAGES); do \
		echo "$(CONTAINER_TOOL) build --target $$target -t $(REGISTRY)/$$target:$(IMAGE_TAG) ."; \
		$(CONTAINER_TOOL) build --target $$target $(DOCKER_BUILD_ARGS) -t $(REGISTRY)/$$target:$(IMAGE_TAG) . ; \
	done

.PHONY: images-push
images-push: docker-push ## Push every image built by images.
	@for target in $(COMPONENT_IMAGES); do $(CONTAINER_TOOL) push $(REGISTRY)/$$target:$(IMAGE_TAG); done

##@ Demo

# The local mesh (test/e2e/localmesh): real apiserver, cert-manager, operator,
# control plane, and netns "nodes" running ztunnel and the CNI agent. Needs root.
DEMO_STATE ?= $(CURDIR)/.demo
DEMO_PAUSE ?= 2s

.PHONY: demo
demo: tools build ## Bring the local mesh up from nothing and walk its story, L4 then L7 (root). Ctrl-C (or make demo-down) tears it down.
	@if [ "$$(id -u)" != 0 ]; then echo "make demo needs root: it creates network namespaces and iptables rules"; exit 1; fi
	go build -o $(LOCALBIN)/localmesh ./test/e2e/demo
	$(LOCALBIN)/localmesh up --state-dir $(DEMO_STATE) --pause $(DEMO_PAUSE)

.PHONY: demo-down
demo-down: ## Tear the local mesh down from its state dir: no process, network namespace, rule or mount is left.
	go run ./test/e2e/demo down --state-dir $(DEMO_STATE)

##@ Cluster

# A real Kubernetes cluster on this machine (hack/cluster, docs/cluster.md): etcd, apiserver,
# controller-manager and scheduler in the root network namespace; each node a network and a mount
# namespace running containerd, a kubelet and kube-proxy. Needs root. KUBECONFIG is
# $(CLUSTER_STATE)/kubeconfig/admin.kubeconfig.
CLUSTER_STATE      ?= $(CURDIR)/.cluster
CLUSTER_NODES      ?= 1
CLUSTER_PROXY_MODE ?= iptables
CLUSTER_BIN        := $(LOCALBIN)/cluster

.PHONY: cluster-bin
cluster-bin:
	CGO_ENABLED=0 go build -trimpath -o $(CLUSTER_BIN)/ ./hack/cluster ./hack/cluster/pause ./hack/cluster/smokeapp

.PHONY: cluster-up
cluster-up: cluster-bin ## Bring up a real cluster as root: control plane plus CLUSTER_NODES (1 or 2) nodes with containerd, kubelet, kube-proxy.
	@if [ "$$(id -u)" != 0 ]; then echo "make cluster-up needs root: it creates network and mount namespaces, cgroups and a bridge"; exit 1; fi
	hack/tools.sh apt kubernetes etcd kubernetes-cluster coredns
	$(CLUSTER_BIN)/cluster up --state-dir $(CLUSTER_STATE) --nodes $(CLUSTER_NODES) --proxy-mode $(CLUSTER_PROXY_MODE) \
		--k8s-bin-dir $(ENVTEST_ASSETS) --pause $(CLUSTER_BIN)/pause

.PHONY: cluster-smoke
cluster-smoke: cluster-bin ## On the cluster-up cluster: an imported image runs on every node, gets Ready; logs, exec and a Service ClusterIP work.
	$(CLUSTER_BIN)/cluster smoke --state-dir $(CLUSTER_STATE) --k8s-bin-dir $(ENVTEST_ASSETS) --app $(CLUSTER_BIN)/smokeapp

.PHONY: cluster-cert-manager
cluster-cert-manager: cluster-bin ## On the cluster-up cluster (root): cert-manager's CRDs, controller and cainjector (hack/cert-manager; no webhook), Deployments Available.
	hack/tools.sh cert-manager
	$(CLUSTER_BIN)/cluster cert-manager --state-dir $(CLUSTER_STATE) --k8s-bin-dir $(ENVTEST_ASSETS) \
		--controller $(LOCALBIN)/cert-manager-controller --cainjector $(LOCALBIN)/cert-manager-cainjector

# cluster-images: one image per Dockerfile stage, without a Docker engine (hack/cluster images,
# go-containerregistry), from binaries built as the Dockerfile's build stage builds them
# (its BINARIES, static, -trimpath, LDFLAGS). One tag for every image, CLUSTER_IMAGE_TAG, which is
# also the version stamped into the binaries: by default the mesh's default version
# (api/v1alpha1 DefaultVersion), so an AmbientMesh without spec.version finds its images. The
# operator's image is $(REGISTRY)/ambient-operator:$(CLUSTER_IMAGE_TAG) (deploy with that IMG).
# CLUSTER_IMAGES_EXTRA adds images of one binary each: ref=binary[:entrypoint[:user]] ...
CLUSTER_IMAGE_TAG    ?= 0.1.0
CLUSTER_IMAGE_BIN    := $(LOCALBIN)/images/$(CLUSTER_IMAGE_TAG)
CLUSTER_IMAGES_EXTRA ?=
DOCKERFILE_BINARIES  := $(shell sed -nE 's/^ARG BINARIES="(.*)"$$/\1/p' Dockerfile)

.PHONY: cluster-images
cluster-images: cluster-bin ## On the cluster-up cluster (root): build every Dockerfile image, REGISTRY/<stage>:CLUSTER_IMAGE_TAG (operator: ambient-operator), and import it into every node.
	$(MAKE) --no-print-directory cluster-image-binaries VERSION=$(CLUSTER_IMAGE_TAG)
	$(CLUSTER_BIN)/cluster images --state-dir $(CLUSTER_STATE) --bin-dir $(CLUSTER_IMAGE_BIN) \
		--registry $(REGISTRY) --tag $(CLUSTER_IMAGE_TAG) --dockerfile Dockerfile $(addprefix --extra ,$(CLUSTER_IMAGES_EXTRA))

# The Dockerfile's build stage on this machine; cluster-images sets VERSION, and with it LDFLAGS.
.PHONY: cluster-image-binaries
cluster-image-binaries:
	CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "$(LDFLAGS)" -o $(CLUSTER_IMAGE_BIN)/ $(DOCKERFILE_BINARIES)

.PHONY: cluster-down
cluster-down: cluster-bin ## Stop the cluster and remove all it created: processes, mounts, namespaces with their rules, cgroups, state.
	$(CLUSTER_BIN)/cluster down --state-dir $(CLUSTER_STATE)

# test-cluster: the real-cluster suite (test/cluster) on a cluster of its own, removed at the end
# whether the suite passed or not. Images of two mesh versions: the sample's (the default) and
# the one the upgrade check moves to. The app pods run the conformance suite's echo image
# (Istio's echo server and client, hack/echo; see cluster-echo-image).
TEST_CLUSTER_STATE        ?= $(CURDIR)/.cluster-test
TEST_CLUSTER_NODES        ?= 2
TEST_CLUSTER_VERSION      := $(CLUSTER_IMAGE_TAG)
TEST_CLUSTER_NEXT_VERSION ?= 0.1.1
TEST_CLUSTER_APP_IMAGE    = $(CONFORMANCE_ECHO_IMAGE)
# The operator image the bundle's CSV names: the same binary under that name.
TEST_CLUSTER_BUNDLE_IMAGE := $(shell sed -nE 's/^ *containerImage: *//p' bundle/manifests/ambient-operator.clusterserviceversion.yaml)

.PHONY: test-cluster
test-cluster: cluster-bin ## The real-cluster suite (root): a fresh TEST_CLUSTER_NODES-node cluster with CoreDNS and cert-manager, images of two versions; make deploy and the bundle, each with the sample, traffic, policy, restart, (upgrade,) uninstall. Removes the cluster after.
	@if [ "$$(id -u)" != 0 ]; then echo "make test-cluster needs root: it runs make cluster-up"; exit 1; fi
	@state=$(TEST_CLUSTER_STATE); sub="$(MAKE) --no-print-directory CLUSTER_STATE=$$state"; \
	$$sub cluster-down >/dev/null; \
	trap "$$sub cluster-down" EXIT; set -e; start=$$(date +%s); \
	$$sub cluster-up CLUSTER_NODES=$(TEST_CLUSTER_NODES); \
	$$sub cluster-cert-manager; \
	$$sub cluster-images CLUSTER_IMAGE_TAG=$(TEST_CLUSTER_NEXT_VERSION); \
	$$sub cluster-images CLUSTER_IMAGE_TAG=$(TEST_CLUSTER_VERSION) \
		CLUSTER_IMAGES_EXTRA="$(TEST_CLUSTER_BUNDLE_IMAGE)=$(LOCALBIN)/images/$(TEST_CLUSTER_VERSION)/operator:/operator:65532:65532"; \
	$$sub cluster-echo-image; \
	CLUSTER_STATE=$$state CLUSTER_KUBECTL=$(ENVTEST_ASSETS)/kubectl \
		CLUSTER_OPERATOR_IMAGE=$(REGISTRY)/ambient-operator:$(TEST_CLUSTER_VERSION) CLUSTER_APP_IMAGE=$(TEST_CLUSTER_APP_IMAGE) \
		CLUSTER_MESH_VERSION=$(TEST_CLUSTER_VERSION) CLUSTER_NEXT_MESH_VERSION=$(TEST_CLUSTER_NEXT_VERSION) \
		go test -count=1 -timeout 40m -v ./test/cluster/ -ginkgo.v; \
	echo "test-cluster: passed in $$(( $$(date +%s) - start )) s"

# conformance: the Gateway API conformance suite's mesh profiles (MESH-HTTP, MESH-GRPC; test/conformance)
# on a cluster of its own, removed at the end. The suite's echo pods run Istio's echo server
# and client (hack/echo), imported under the image reference the suite's manifests name. The
# operator is installed as docs/install.md says (Gateway API CRDs first, make deploy, the
# AmbientMesh sample); the report goes to CONFORMANCE_REPORT. CONFORMANCE_ARGS reach the suite's
# test binary, e.g. CONFORMANCE_ARGS='-args --run-test=MeshPorts' runs one of its tests.
CONFORMANCE_STATE   ?= $(CURDIR)/.cluster-conformance
CONFORMANCE_NODES   ?= 2
# Evaluated on first use only, then kept (the deferred simple expansion idiom): targets that
# do not name the report, make help among them, run no go list.
GATEWAY_API_VERSION = $(eval GATEWAY_API_VERSION := $$(shell go list -m -f '{{.Version}}' sigs.k8s.io/gateway-api))$(GATEWAY_API_VERSION)
CONFORMANCE_REPORT  ?= $(CURDIR)/docs/conformance/ambient-operator-$(CLUSTER_IMAGE_TAG)-gateway-api-$(GATEWAY_API_VERSION)-mesh-report.yaml
# The suite's echo image reference, e.g. gcr.io/k8s-staging-gateway-api/echo-advanced:v2024...
CONFORMANCE_ECHO_IMAGE = $(shell sed -nE 's/^ *image: *([^ ]*\/echo-advanced:[^ ]*)$$/\1/p' \
	"$$(go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api/conformance)/mesh/manifests.yaml" | head -1)

.PHONY: conformance
conformance: cluster-bin ## The Gateway API mesh conformance suite (root): a fresh cluster, the operator by make deploy, the sample mesh, the suite's namespaces enrolled with a waypoint; writes CONFORMANCE_REPORT. Removes the cluster after.
	@if [ "$$(id -u)" != 0 ]; then echo "make conformance needs root: it runs make cluster-up"; exit 1; fi
	@state=$(CONFORMANCE_STATE); sub="$(MAKE) --no-print-directory CLUSTER_STATE=$$state"; \
	kubeconfig=$$state/kubeconfig/admin.kubeconfig; kubectl="$(ENVTEST_ASSETS)/kubectl --kubeconfig $$kubeconfig"; \
	$$sub cluster-down >/dev/null; \
	trap "$$sub cluster-down" EXIT; set -e; start=$$(date +%s); \
	$$sub cluster-up CLUSTER_NODES=$(CONFORMANCE_NODES); \
	$$sub cluster-cert-manager; \
	$$sub cluster-images; \
	$$sub cluster-echo-image; \
	$$kubectl apply --server-side -k "$$(go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)/config/crd/experimental"; \
	$$sub deploy IMG=$(REGISTRY)/ambient-operator:$(CLUSTER_IMAGE_TAG) CLUSTER_KUBECTL="$$kubectl"; \
	$$kubectl -n ambient-operator-system wait deploy/ambient-operator-controller-manager --for=condition=Available --timeout=5m; \
	for i in $$(seq 60); do $$kubectl apply -f config/samples/mesh_v1alpha1_ambientmesh.yaml && break; sleep 2; done; \
	$$kubectl wait ambientmesh/default --for=condition=Ready --timeout=5m; \
	mkdir -p $$(dirname $(CONFORMANCE_REPORT)); \
	KUBECONFIG=$$kubeconfig CLUSTER_STATE=$$state CONFORMANCE_REPORT=$(CONFORMANCE_REPORT) \
		CONFORMANCE_PROJECT_VERSION=$(CLUSTER_IMAGE_TAG) \
		go test -count=1 -timeout 40m -v ./test/conformance/ $(CONFORMANCE_ARGS); \
	echo "conformance: passed in $$(( $$(date +%s) - start )) s; report $(CONFORMANCE_REPORT)"

# test-conformance: make conformance as make test runs it, writing its report outside docs/ (the
# committed report is written by `make conformance` when a release claims it).
.PHONY: test-conformance
test-conformance: ## make conformance with the report in .conformance-report.yaml (make test runs it as root).
	$(MAKE) --no-print-directory conformance CONFORMANCE_REPORT=$(CURDIR)/.conformance-report.yaml

# cluster-echo-image: Istio's echo server and client as the suite's echo-advanced image
# (hack/echo/Dockerfile), under the reference the suite's manifests name, into every node.
.PHONY: cluster-echo-image
cluster-echo-image: cluster-bin
	hack/tools.sh echo
	ref=$(CONFORMANCE_ECHO_IMAGE); name=$${ref%:*}; \
	$(CLUSTER_BIN)/cluster images --state-dir $(CLUSTER_STATE) --bin-dir $(LOCALBIN)/echo \
		--registry $${name%/echo-advanced} --tag $${ref##*:} --dockerfile hack/echo/Dockerfile

##@ Deployment

# install, uninstall, deploy and undeploy talk to the cluster of the current
# kubeconfig with the kubectl on PATH (or the one `make tools` builds).
CLUSTER_KUBECTL ?= $(shell command -v kubectl 2>/dev/null || echo $(KUBECTL))
# The OLM bundle: the operator release it describes, its channel, and where
# it is written (test/deploy regenerates it elsewhere to check it is current).
BUNDLE_VERSION    ?= 0.1.0
BUNDLE_CHANNELS   ?= candidate
BUNDLE_IMG        ?= $(REGISTRY)/ambient-operator-bundle:v$(BUNDLE_VERSION)
BUNDLE_DIR        ?= bundle
BUNDLE_DOCKERFILE ?= bundle.Dockerfile

.PHONY: install
install: kustomize ## Install the CRDs (config/crd) into the cluster, server-side. Nothing else: no operator, RBAC or webhooks.
	$(KUSTOMIZE) build config/crd | $(CLUSTER_KUBECTL) apply --server-side --force-conflicts -f -

.PHONY: uninstall
uninstall: kustomize ## Delete the CRDs from the cluster, and with them every AmbientMesh, Waypoint and MeshPolicy.
	$(KUSTOMIZE) build config/crd | $(CLUSTER_KUBECTL) delete --ignore-not-found --wait -f -

.PHONY: deploy
deploy: kustomize ## Install CRDs, RBAC, webhooks (cert-manager certificate) and the operator image IMG into the cluster. Needs cert-manager.
	hack/bundle/render.sh config/default $(IMG) | $(CLUSTER_KUBECTL) apply --server-side --force-conflicts -f -

.PHONY: undeploy
undeploy: kustomize ## Remove what deploy installed. Delete the AmbientMesh first, so the operator uninstalls the mesh.
	hack/bundle/render.sh config/default $(IMG) | $(CLUSTER_KUBECTL) delete --ignore-not-found --wait -f -

.PHONY: build-installer
build-installer: kustomize ## Write dist/install.yaml: everything deploy installs, in one file, for image IMG.
	mkdir -p dist
	hack/bundle/render.sh config/default $(IMG) > dist/install.yaml

.PHONY: bundle
bundle: kustomize ## Generate the OLM bundle (bundle/, bundle.Dockerfile) for BUNDLE_VERSION. Reproducible: a rerun changes nothing.
	hack/bundle/render.sh config/manifests $(REGISTRY)/ambient-operator:v$(BUNDLE_VERSION) | \
		go run ./hack/bundle --version $(BUNDLE_VERSION) --channels $(BUNDLE_CHANNELS) \
			--output-dir $(BUNDLE_DIR) --dockerfile $(BUNDLE_DOCKERFILE)

.PHONY: bundle-build
bundle-build: ## Build the bundle image BUNDLE_IMG from bundle.Dockerfile.
	$(CONTAINER_TOOL) build -f $(BUNDLE_DOCKERFILE) -t $(BUNDLE_IMG) .

##@ Dependencies

# Each target asks hack/tools.sh for what it needs: a no-op when that version is
# cached, a build from source when it is not (or when hack/tools.sh names a new version).

.PHONY: tools
tools: ## Build every tool into bin/: kube-apiserver, etcd, kubectl, cert-manager, controller-gen, kustomize, protoc plugins, golangci-lint, setup-envtest.
	hack/tools.sh

.PHONY: controller-gen
controller-gen: ## Build controller-gen into bin/.
	hack/tools.sh controller-gen

.PHONY: protoc-gen
protoc-gen: ## Build the protoc plugins protoc-gen-go and protoc-gen-go-grpc into bin/.
	hack/tools.sh protoc-gen-go protoc-gen-go-grpc

.PHONY: kustomize
kustomize: ## Build kustomize into bin/.
	hack/tools.sh kustomize

.PHONY: golangci-lint
golangci-lint: ## Build golangci-lint into bin/.
	hack/tools.sh golangci-lint
