// Package wire is the small protocol between the chained CNI plugin and the
// node agent: one JSON request per HTTP POST over the agent's unix socket,
// answered by one JSON response. It also defines the enrollment state file
// the agent keeps on the host, which the plugin reads when the agent cannot
// be reached.
//
// The request carries only what the runtime gave the plugin (pod name,
// namespace and uid, container id, netns path, interface, IPs). It never
// carries the CNI config or runtime args verbatim, so nothing secret is sent
// or logged. The netns path must be one runtimes use (ValidateNetnsPath):
// the agent opens it as root.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Path is the HTTP path the agent serves the plugin on.
const Path = "/v1/cni"

// MaxMessageSize bounds a request or response body.
const MaxMessageSize = 16 << 10

// Commands the plugin reports.
const (
	CommandAdd = "ADD"
	CommandDel = "DEL"
)

// Request is what the plugin tells the agent about one pod sandbox.
type Request struct {
	Command      string   `json:"command"`
	ContainerID  string   `json:"containerID"`
	Netns        string   `json:"netns,omitempty"`
	IfName       string   `json:"ifName,omitempty"`
	PodName      string   `json:"podName"`
	PodNamespace string   `json:"podNamespace"`
	PodUID       string   `json:"podUID,omitempty"`
	IPs          []string `json:"ips,omitempty"`
}

// Response is the agent's answer. Error is set when the pod is enrolled but
// could not be captured; the plugin then fails ADD with it.
type Response struct {
	Enrolled bool   `json:"enrolled"`
	Error    string `json:"error,omitempty"`
}

// Encode returns the request's JSON body.
func (r *Request) Encode() ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(r)
}

// DecodeRequest parses and validates a request body; unknown fields,
// trailing data and oversized bodies are refused.
func DecodeRequest(body []byte) (*Request, error) {
	var r Request
	if err := decodeStrict(body, &r); err != nil {
		return nil, fmt.Errorf("cni request: %w", err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// DecodeResponse parses a response body.
func DecodeResponse(body []byte) (*Response, error) {
	var r Response
	if err := decodeStrict(body, &r); err != nil {
		return nil, fmt.Errorf("cni response: %w", err)
	}
	return &r, nil
}

func decodeStrict(body []byte, v any) error {
	if len(body) > MaxMessageSize {
		return fmt.Errorf("body of %d bytes exceeds %d", len(body), MaxMessageSize)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// Validate returns every field-level problem of the request.
func (r *Request) Validate() error {
	var errs []error
	field := func(name, msg string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(msg, args...)))
	}
	switch r.Command {
	case CommandAdd, CommandDel:
	default:
		field("command", "%q is not ADD or DEL", r.Command)
	}
	if r.ContainerID == "" || len(r.ContainerID) > 256 {
		field("containerID", "must be 1-256 characters")
	}
	for _, msg := range validation.IsDNS1123Subdomain(r.PodName) {
		field("podName", "%s", msg)
	}
	for _, msg := range validation.IsDNS1123Label(r.PodNamespace) {
		field("podNamespace", "%s", msg)
	}
	if len(r.PodUID) > 128 {
		field("podUID", "longer than 128 characters")
	}
	if r.Netns != "" {
		if err := ValidateNetnsPath(r.Netns); err != nil {
			field("netns", "%v", err)
		}
	}
	if r.Command == CommandAdd && r.Netns == "" {
		field("netns", "required for ADD")
	}
	if len(r.IfName) > 15 || strings.ContainsAny(r.IfName, "/ \x00") {
		field("ifName", "%q is not an interface name", r.IfName)
	}
	if len(r.IPs) > 16 {
		field("ips", "more than 16 addresses")
	}
	for i, ip := range r.IPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			field(fmt.Sprintf("ips[%d]", i), "%q is not an IP address", ip)
		}
	}
	return errors.Join(errs...)
}

// Netns paths the runtime may name: the agent opens the path as root and
// enters it, so anything else (a file, a device, another process's mount
// namespace) is refused before it gets there.
const (
	procNetnsPrefix = "/proc/"
	procNetnsSuffix = "/ns/net"
	maxPIDDigits    = 10
	maxNetnsName    = 255 // NAME_MAX
)

var netnsDirs = []string{"/var/run/netns/", "/run/netns/"}

// ValidateNetnsPath accepts the network namespace paths container runtimes
// pass to CNI plugins: /proc/<pid>/ns/net (pid in digits) and a bind mount
// /var/run/netns/<name> or /run/netns/<name> (name without "/" or "..").
func ValidateNetnsPath(path string) error {
	if validNetnsPath(path) {
		return nil
	}
	return fmt.Errorf("%q is not a network namespace path the agent opens: "+
		"/proc/<pid>/ns/net, /var/run/netns/<name> or /run/netns/<name> (<name> without \"/\" or \"..\")", path)
}

func validNetnsPath(path string) bool {
	if rest, ok := strings.CutPrefix(path, procNetnsPrefix); ok {
		pid, ok := strings.CutSuffix(rest, procNetnsSuffix)
		return ok && pid != "" && len(pid) <= maxPIDDigits && strings.Trim(pid, "0123456789") == ""
	}
	for _, dir := range netnsDirs {
		if name, ok := strings.CutPrefix(path, dir); ok {
			return name != "" && name != "." && len(name) <= maxNetnsName &&
				!strings.Contains(name, "..") && !strings.ContainsAny(name, "/\x00")
		}
	}
	return false
}

// Addrs returns the request's IPs parsed (Validate has checked them).
func (r *Request) Addrs() []netip.Addr {
	out := make([]netip.Addr, 0, len(r.IPs))
	for _, s := range r.IPs {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}
