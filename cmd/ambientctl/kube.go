package main

import (
	"fmt"
	"slices"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ambientmesh/ambient-operator/internal/meshscheme"
)

// kubeFlags are the global flags that say which cluster to talk to, as kubectl's do.
type kubeFlags struct {
	kubeconfig string // a file instead of $KUBECONFIG or ~/.kube/config
	context    string // a context of the kubeconfig instead of its current one
	namespace  string // "" means the context's namespace
}

func (k *kubeFlags) bind(root *cobra.Command) {
	fs := root.PersistentFlags()
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
	fs.StringVar(&k.context, "context", "", "kubeconfig context to use (default: its current context)")
	fs.StringVarP(&k.namespace, "namespace", "n", "", "namespace (default: the kubeconfig context's)")
	// Completing --context needs only the kubeconfig, not the cluster.
	_ = root.RegisterFlagCompletionFunc("context", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		contexts, _ := k.contexts()
		return contexts, cobra.ShellCompDirectiveNoFileComp
	})
}

// clientConfig loads the kubeconfig as kubectl does: --kubeconfig, else the files in
// $KUBECONFIG (merged), else ~/.kube/config, else the in-cluster configuration;
// --context and -n override what it says.
func (k kubeFlags) clientConfig() clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = k.kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: k.context}
	overrides.Context.Namespace = k.namespace
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
}

func (k kubeFlags) restConfig() (*rest.Config, error) {
	cfg, err := k.clientConfig().ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return cfg, nil
}

// currentNamespace is -n, else the context's namespace, else "default".
func (k kubeFlags) currentNamespace() (string, error) {
	ns, _, err := k.clientConfig().Namespace()
	if err != nil {
		return "", fmt.Errorf("kubeconfig: %w", err)
	}
	return ns, nil
}

// contexts are the names of the kubeconfig's contexts, sorted.
func (k kubeFlags) contexts() ([]string, error) {
	raw, err := k.clientConfig().RawConfig()
	if err != nil {
		return nil, err
	}
	var names []string
	for name := range raw.Contexts {
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

// client is a client for the kinds ambientctl reads (ours, the core ones and the
// Gateway API's), with the configuration it was made from.
func (k kubeFlags) client() (client.Client, *rest.Config, error) {
	cfg, err := k.restConfig()
	if err != nil {
		return nil, nil, err
	}
	cl, err := client.New(cfg, client.Options{Scheme: meshscheme.New()})
	return cl, cfg, err
}
