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

package crd

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
	"github.com/ambientmesh/ambient-operator/test/testenv"
)

// newNamespace creates a namespace for one spec and deletes it afterwards.
func newNamespace() string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "crd-test-"}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, ns))).To(Succeed()) })
	return ns.Name
}

// fromYAML decodes one object as a user would write it.
func fromYAML(doc string) *unstructured.Unstructured {
	obj := &unstructured.Unstructured{}
	Expect(yaml.Unmarshal([]byte(doc), &obj.Object)).To(Succeed(), doc)
	return obj
}

// create creates obj (in namespace when it is namespaced) and, when that
// succeeds, deletes it after the spec. It returns the API server's answer.
func create(obj *unstructured.Unstructured, namespace string) error {
	if obj.GetKind() != "AmbientMesh" {
		obj.SetNamespace(namespace)
	}
	err := k8sClient.Create(ctx, obj)
	if err == nil {
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, obj))).To(Succeed()) })
	}
	return err
}

// expectFieldError asserts that err is an Invalid error naming field with a
// message that contains message, the way `kubectl apply` shows it.
func expectFieldError(err error, field, message string) {
	GinkgoHelper()
	Expect(err).To(HaveOccurred(), "the API server accepted an invalid object")
	Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid (422) error, got: %v", err)
	var status apierrors.APIStatus
	Expect(errors.As(err, &status)).To(BeTrue())
	details := status.Status().Details
	Expect(details).NotTo(BeNil(), "no details in %v", err)
	Expect(details.Causes).To(ContainElement(And(
		HaveField("Field", field),
		HaveField("Message", ContainSubstring(message)),
	)), "want a cause on field %q containing %q; got causes %+v", field, message, details.Causes)
}

// sampleFiles lists the YAML files kubectl apply -f config/samples/ reads.
func sampleFiles() []string {
	files, err := filepath.Glob(filepath.Join(repoRoot, "config", "samples", "*.yaml"))
	Expect(err).NotTo(HaveOccurred())
	Expect(files).NotTo(BeEmpty())
	return files
}

// readObjects decodes every document of a YAML file.
func readObjects(path string) []*unstructured.Unstructured {
	data, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred())
	objs, err := testenv.DecodeObjects(bytes.NewReader(data))
	Expect(err).NotTo(HaveOccurred(), path)
	return objs
}

// runKubectl runs the envtest kubectl as the test user and returns its
// combined output.
func runKubectl(args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	GinkgoWriter.Printf("$ kubectl %s\n%s\n", strings.Join(args, " "), out)
	return string(out), err
}

func getMesh() *meshv1.AmbientMesh {
	mesh := &meshv1.AmbientMesh{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Name: meshv1.MeshName}, mesh)).To(Succeed())
	return mesh
}
