package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"

	meshv1alpha1 "github.com/ambientmesh/ambient-operator/api/v1alpha1"
)

// The proxies' admin endpoints listen on 127.0.0.1:15000 inside their pods only. The
// ways to reach one (--via):
const (
	// viaPortForward: through the API server to the pod's loopback (the default).
	viaPortForward = "port-forward"
	// viaNetns: from inside the pod's network namespace on this host: the local
	// mesh, where nodes and pods are network namespaces in /var/run/netns.
	viaNetns = "netns"
	// viaAddress: dial --admin-address from here: a `kubectl port-forward` made by
	// hand, or a proxy running on this machine.
	viaAddress = "address"
)

var viaChoices = []string{viaPortForward, viaNetns, viaAddress}

// localAdmin is the admin endpoint as seen from inside the proxy's pod.
var localAdmin = fmt.Sprintf("127.0.0.1:%d", meshv1alpha1.PortAdmin)

// adminFlags choose how to reach an admin endpoint.
type adminFlags struct {
	via      string
	netnsDir string
	address  string
}

func (a *adminFlags) bind(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&a.via, "via", viaPortForward, "how to reach the proxy's admin endpoint: port-forward (through the API server), "+
		"netns (from inside its network namespace on this host: the local mesh) or address (--admin-address)")
	fs.StringVar(&a.netnsDir, "netns-dir", "/var/run/netns", "with --via netns: where the network namespaces are")
	fs.StringVar(&a.address, "admin-address", localAdmin, "with --via address: the admin endpoint to dial from here; setting it implies --via address")
	_ = cmd.RegisterFlagCompletionFunc("via", cobra.FixedCompletions(viaChoices, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("netns-dir", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return nil, cobra.ShellCompDirectiveFilterDirs
	})
	_ = cmd.RegisterFlagCompletionFunc("admin-address", cobra.NoFileCompletions)
}

// resolve checks --via, which --admin-address alone sets to address.
func (a *adminFlags) resolve(cmd *cobra.Command) error {
	if !slices.Contains(viaChoices, a.via) {
		return fmt.Errorf("--via %q: want one of %s", a.via, strings.Join(viaChoices, ", "))
	}
	if cmd.Flags().Changed("admin-address") {
		if cmd.Flags().Changed("via") && a.via != viaAddress {
			return fmt.Errorf("--admin-address is for --via address, not --via %s", a.via)
		}
		a.via = viaAddress
	}
	return nil
}

// podDialer is how to reach pod's admin endpoint, and the address to ask there.
func (a *adminFlags) podDialer(cfg *rest.Config, pod corev1.Pod) (dialFunc, string, error) {
	switch a.via {
	case viaAddress:
		return dialHere, a.address, nil
	case viaNetns:
		nsPath, err := netnsWithIP(a.netnsDir, pod.Status.PodIP)
		if err != nil {
			return nil, "", fmt.Errorf("its IP %q (node %s): %w", pod.Status.PodIP, pod.Spec.NodeName, err)
		}
		return dialerIn(nsPath), localAdmin, nil
	default:
		dial, err := portForwardDialer(cfg, pod.Namespace, pod.Name, meshv1alpha1.PortAdmin)
		return dial, localAdmin, err
	}
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func dialHere(ctx context.Context, network, addr string) (net.Conn, error) {
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

// dialerIn dials from inside the network namespace at nsPath.
func dialerIn(nsPath string) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(nsPath, func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// adminRequest sends method path to a proxy's admin endpoint at admin, connecting
// with dial, and returns the body of a 200 answer.
func adminRequest(dial dialFunc, admin, method, path string) ([]byte, error) {
	timeout := 15 * time.Second // a port-forward goes through the API server and the kubelet
	if method != http.MethodGet {
		timeout = time.Minute // an action waits for the certificate service, once per identity
	}
	transport := &http.Transport{DialContext: dial}
	defer transport.CloseIdleConnections()
	c := &http.Client{Timeout: timeout, Transport: transport}
	req, err := http.NewRequest(method, "http://"+admin+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w (is the proxy running there?)", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s: %.500s", method, path, resp.Status, body)
	}
	return body, nil
}

// inNetns runs fn on a thread that entered the network namespace at nsPath;
// sockets fn opens stay in it. The thread returns to its own netns
// afterwards (or is discarded if it cannot).
func inNetns(nsPath string, fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			ch <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- fmt.Errorf("entering %s: %w (needs root)", nsPath, err)
			return
		}
		ch <- fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return <-ch
}

// netnsWithIP finds the network namespace in dir that has ip on one of its
// interfaces.
func netnsWithIP(dir, ip string) (string, error) {
	want := net.ParseIP(ip)
	if want == nil {
		return "", errors.New("the pod has no IP yet")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("no network namespace of it here: %w", err)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		found := false
		err := inNetns(path, func() error {
			addrs, err := net.InterfaceAddrs()
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && n.IP.Equal(want) {
					found = true
				}
			}
			return err
		})
		if err == nil && found {
			return path, nil
		}
	}
	return "", fmt.Errorf("no network namespace in %s has it", dir)
}
