/*
Copyright 2026 The ambient-operator Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Package crd tests our CustomResourceDefinitions against a real
// kube-apiserver and etcd (envtest, binaries built from source by
// `make tools`): they install, the samples are accepted, bad objects are
// refused with field-level errors, defaults are applied, and kubectl can
// apply the samples and explain every field.
package crd

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
	"github.com/ambientmesh/ambient-operator/test/testenv"
)

var (
	ctx        context.Context
	k8sClient  client.Client
	repoRoot   string
	kubectl    string
	kubeconfig string
)

func TestCRDs(t *testing.T) {
	if testing.Short() {
		t.Skip("envtest suite (real kube-apiserver and etcd): skipped in -short mode, run by make test")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "CRD suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	var cancel context.CancelFunc
	ctx, cancel = context.WithCancel(context.Background())
	DeferCleanup(cancel)

	var err error
	repoRoot, err = testenv.RepoRoot()
	Expect(err).NotTo(HaveOccurred())
	kubectl, err = testenv.KubectlPath()
	Expect(err).NotTo(HaveOccurred())

	// Only our CRDs: this suite tests them alone, straight from the
	// generated files, on the envtest binaries `make tools` builds.
	assets, err := testenv.AssetsDir()
	Expect(err).NotTo(HaveOccurred())
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(repoRoot, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	// Registered before Start: Start leaves etcd and the apiserver running
	// when installing the CRDs fails (e.g. a CEL rule over its cost budget).
	DeferCleanup(func() { Expect(env.Stop()).To(Succeed()) })
	cfg, err := env.Start()
	Expect(err).NotTo(HaveOccurred())

	k8sClient, err = client.New(cfg, client.Options{Scheme: meshscheme.New()})
	Expect(err).NotTo(HaveOccurred())

	// kubectl talks to the envtest apiserver as an admin user of its own,
	// through a kubeconfig file like a person would.
	user, err := env.AddUser(envtest.User{Name: "crd-tester", Groups: []string{"system:masters"}}, nil)
	Expect(err).NotTo(HaveOccurred())
	data, err := user.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	dir, err := os.MkdirTemp("", "crd-suite-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, dir)
	kubeconfig = filepath.Join(dir, "kubeconfig")
	Expect(os.WriteFile(kubeconfig, data, 0o600)).To(Succeed())
})
