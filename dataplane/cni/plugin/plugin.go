// Package plugin is the chained CNI plugin ("ambient-cni"). It runs after
// the node's primary network plugin, passes the primary's result through
// untouched, and tells the node agent about the pod synchronously, so an
// enrolled pod never starts before its traffic is captured.
//
// Decisions: the agent decides enrollment (it has the namespace and pod
// labels). When the agent cannot be reached in time, the plugin reads the
// enrollment state file the agent keeps on the host: a pod that file says
// is enrolled fails ADD with a clear message (the runtime retries); any
// other pod passes through. DEL and CHECK never fail because of the agent.
package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/ambientmesh/ambient-operator/dataplane/cni/wire"
)

// Type is the plugin's name in a conflist and its binary's name.
const Type = "ambient-cni"

// Defaults for the plugin's own config keys.
const (
	DefaultAgentSocket = "/var/run/ambientmesh/cni/agent.sock"
	DefaultStateFile   = "/var/run/ambientmesh/cni/enrollment.json"
	DefaultTimeout     = 10 * time.Second
)

// Config is the plugin's entry in the conflist.
type Config struct {
	types.PluginConf
	// AgentSocket is the node agent's unix socket.
	AgentSocket string `json:"agentSocket,omitempty"`
	// StateFile is the agent's enrollment state, read when it is unreachable.
	StateFile string `json:"stateFile,omitempty"`
	// TimeoutSeconds bounds the call to the agent.
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
}

// k8sArgs are the CNI_ARGS container runtimes set for Kubernetes pods.
type k8sArgs struct {
	types.CommonArgs
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive // runtime's spelling
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive
	K8S_POD_UID                types.UnmarshallableString //nolint:revive
}

// Main runs the plugin (called from cmd/cni-plugin).
func Main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: CmdAdd, Del: CmdDel, Check: CmdCheck},
		version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"),
		"ambient mesh chained CNI plugin")
}

func parseConfig(stdin []byte) (*Config, error) {
	conf := &Config{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, fmt.Errorf("ambient-cni: parse network config: %w", err)
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, fmt.Errorf("ambient-cni: parse prevResult: %w", err)
	}
	if conf.AgentSocket == "" {
		conf.AgentSocket = DefaultAgentSocket
	}
	if conf.StateFile == "" {
		conf.StateFile = DefaultStateFile
	}
	if conf.TimeoutSeconds < 0 || conf.TimeoutSeconds > 300 {
		return nil, fmt.Errorf("ambient-cni: timeoutSeconds: %d is not between 0 and 300", conf.TimeoutSeconds)
	}
	return conf, nil
}

func (c *Config) timeout() time.Duration {
	if c.TimeoutSeconds == 0 {
		return DefaultTimeout
	}
	return time.Duration(c.TimeoutSeconds) * time.Second
}

// request builds the message for the agent; ok=false for a sandbox that is
// not a Kubernetes pod (nothing for the mesh to do).
func request(cmd string, args *skel.CmdArgs, prev types.Result) (*wire.Request, bool, error) {
	k := k8sArgs{}
	if err := types.LoadArgs(args.Args, &k); err != nil {
		return nil, false, fmt.Errorf("ambient-cni: parse CNI_ARGS: %w", err)
	}
	if k.K8S_POD_NAME == "" || k.K8S_POD_NAMESPACE == "" {
		return nil, false, nil
	}
	req := &wire.Request{
		Command: cmd, ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName,
		PodName: string(k.K8S_POD_NAME), PodNamespace: string(k.K8S_POD_NAMESPACE), PodUID: string(k.K8S_POD_UID),
	}
	if prev != nil {
		res, err := current.NewResultFromResult(prev)
		if err != nil {
			return nil, false, fmt.Errorf("ambient-cni: convert prevResult: %w", err)
		}
		for _, ip := range res.IPs {
			req.IPs = append(req.IPs, ip.Address.IP.String())
		}
	}
	return req, true, nil
}

// CmdAdd tells the agent and passes the previous result through.
func CmdAdd(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return errors.New("ambient-cni: no prevResult: this plugin must be chained after the primary network plugin")
	}
	req, ok, err := request(wire.CommandAdd, args, conf.PrevResult)
	if err != nil {
		return err
	}
	if ok {
		if err := add(conf, req); err != nil {
			return err
		}
	}
	return types.PrintResult(conf.PrevResult, conf.CNIVersion)
}

func add(conf *Config, req *wire.Request) error {
	pod := req.PodNamespace + "/" + req.PodName
	// Why the agent gave no answer about the pod; the enrollment state file decides then.
	var why string
	if err := req.Validate(); err != nil {
		// Something the agent refuses to act on, such as a netns path outside
		// /proc/<pid>/ns/net and /var/run/netns: asking again will not help.
		why = fmt.Sprintf("its sandbox cannot be handed to the node agent (%v)", err)
	} else if resp, err := callAgent(conf.AgentSocket, conf.timeout(), req); err != nil {
		why = fmt.Sprintf("the node agent at %s is unreachable (%v); the runtime will retry", conf.AgentSocket, err)
	} else {
		if resp.Error != "" {
			return fmt.Errorf("ambient-cni: pod %s is enrolled in the mesh but its traffic could not be captured: %s", pod, resp.Error)
		}
		return nil
	}
	state, err := wire.ReadState(conf.StateFile)
	if err != nil {
		return fmt.Errorf("ambient-cni: refusing to start pod %s uncaptured: %s, and the enrollment state is unreadable (%v)", pod, why, err)
	}
	if state.Enrolled(req.PodNamespace, req.PodName) {
		return fmt.Errorf("ambient-cni: pod %s is enrolled in the mesh but %s; not starting it uncaptured", pod, why)
	}
	return nil // not enrolled: never block a pod the mesh does not own
}

// CmdDel tells the agent, best effort: DEL must succeed so the runtime can
// release the sandbox, and the agent also sees the pod go in the apiserver.
func CmdDel(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return nil //nolint:nilerr // a broken config must not wedge teardown
	}
	req, ok, err := request(wire.CommandDel, args, conf.PrevResult)
	if err != nil || !ok {
		return nil //nolint:nilerr
	}
	_, _ = callAgent(conf.AgentSocket, conf.timeout(), req)
	return nil
}

// CmdCheck has nothing of its own to verify: the agent reconciles rules.
func CmdCheck(args *skel.CmdArgs) error {
	_, err := parseConfig(args.StdinData)
	return err
}

// callAgent posts the request over the agent's unix socket within timeout.
func callAgent(socket string, timeout time.Duration, req *wire.Request) (*wire.Response, error) {
	body, err := req.Encode()
	if err != nil {
		return nil, err
	}
	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Post("http://agent"+wire.Path, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxMessageSize+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("agent answered HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(data))
	}
	return wire.DecodeResponse(data)
}
