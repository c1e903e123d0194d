package meshscheme

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DecodeObjects decodes every document of a multi-document YAML stream into a typed
// object of a kind New knows, skipping empty documents; the golden and table tests
// write their cluster objects this way.
func DecodeObjects(r io.Reader) ([]client.Object, error) {
	decoder := serializer.NewCodecFactory(New()).UniversalDeserializer()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var objs []client.Object
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%w in\n%s", err, doc)
		}
		o, ok := obj.(client.Object)
		if !ok {
			return nil, fmt.Errorf("%T is not an object with metadata", obj)
		}
		objs = append(objs, o)
	}
}
