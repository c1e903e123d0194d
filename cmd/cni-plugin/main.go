// Command cni-plugin is the chained CNI plugin "ambient-cni" that the node
// agent installs into the host's CNI bin dir.
package main

import "github.com/ambientmesh/ambient-operator/dataplane/cni/plugin"

func main() { plugin.Main() }
