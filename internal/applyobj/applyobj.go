// Package applyobj turns the typed objects the operator renders into server-side apply
// request bodies. Typed objects serialise some unset fields as null (creationTimestamp)
// and carry an empty status; an apply request must state only what the operator owns,
// so those are dropped.
package applyobj

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// From returns obj as an apply request body: no status, no null fields.
func From(obj client.Object) (*unstructured.Unstructured, error) {
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	delete(content, "status")
	dropNulls(content)
	u := &unstructured.Unstructured{Object: content}
	if u.GetAPIVersion() == "" || u.GetKind() == "" {
		return nil, fmt.Errorf("rendered %T %s has no apiVersion/kind", obj, client.ObjectKeyFromObject(obj))
	}
	return u, nil
}

func dropNulls(m map[string]any) {
	for k, v := range m {
		switch val := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			dropNulls(val)
		case []any:
			for _, item := range val {
				if im, ok := item.(map[string]any); ok {
					dropNulls(im)
				}
			}
		}
	}
}
