package wire

import "testing"

// FuzzDecodeRequest: the agent decodes whatever arrives on its socket; it
// must never panic, and whatever it accepts must be valid and re-encodable.
func FuzzDecodeRequest(f *testing.F) {
	r := validRequest()
	body, _ := r.Encode()
	f.Add(body)
	f.Add([]byte(`{"command":"DEL","containerID":"a","podName":"p","podNamespace":"n"}`))
	f.Add([]byte(`{"command":"ADD","containerID":"a","netns":"/n","podName":"p","podNamespace":"n","ips":["::1","10.0.0.1"]}`))
	f.Add([]byte(`{"ips":[null]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeRequest(data)
		if err != nil {
			return
		}
		if err := req.Validate(); err != nil {
			t.Fatalf("accepted an invalid request: %v", err)
		}
		again, err := req.Encode()
		if err != nil {
			t.Fatalf("accepted request does not re-encode: %v", err)
		}
		if _, err := DecodeRequest(again); err != nil {
			t.Fatalf("re-encoded request does not decode: %v", err)
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	f.Add([]byte(`{"enrolled":true}`))
	f.Add([]byte(`{"enrolled":true,"error":"ztunnel is not connected"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = DecodeResponse(data)
	})
}
