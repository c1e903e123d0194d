// Package explain answers "why can (or can't) this pod reach that pod or Service with this
// request?" (ambientctl why). It computes the path and the deciding policy at each hop
// with the code the proxies run, fed with the configuration the control plane would send
// them; it re-implements no decision:
//
//   - L4: the control plane's own reconcilers (discovery.Translate), reading the
//     cluster's objects from an in-memory client as they read their cache, give the
//     workload API resources of the whole cluster; they are loaded into a real ztunnel
//     store (dataplane/ztunnel/state), and the ztunnel's router
//     (dataplane/ztunnel/routing) decides where the client's connection goes: a
//     waypoint, or an endpoint (every healthy endpoint of a Service is followed, by
//     driving the router's Pick through each choice).
//   - L7, when the path crosses a waypoint: the waypoint's Envoy resources come from
//     controlplane/xds/waypoint.Build; the listener for the target address runs through
//     the waypoint's own jwt_authn (dataplane/waypoint/jwt), RBAC (dataplane/waypoint/rbac)
//     and route table (dataplane/waypoint/route), and the chosen clusters' load
//     assignments name the destination pods (healthy and unknown-health endpoints, the
//     ones the waypoint's load balancer picks from).
//   - At each destination pod: the ztunnel store's Authorize (the STRICT check, then the
//     policies that apply), with the client as that ztunnel sees it: the original client
//     (its IP and identity) when the peer is a waypoint the store trusts to speak for it
//     (Store.IsWaypointOf), the waypoint itself otherwise.
//
// What it models rather than runs: a client outside the mesh, whose traffic no ztunnel
// captures: kube-proxy sends it straight to a ready endpoint (the router's choice with
// waypoints hidden), where it arrives as plaintext. Fault injection, retries and mirrors
// are mentioned, not simulated.
//
// JWT: a token (in Request.Header, e.g. Authorization: Bearer ...) is checked by the
// waypoint's authenticator. Key sets given inline are used as is; a key set given by URI
// is fetched only with Options.KeySetClient, so that nothing leaves the machine unless
// asked. A request without a token on a path that requires one gets the waypoint's 401.
package explain
