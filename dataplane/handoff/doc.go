// Package handoff owns the in-pod hand-off protocol between the CNI node agent and ztunnel
// (messages in api/handoff/v1alpha1, whose .proto describes the conversation):
//
//   - framing: one protobuf message per unix SOCK_SEQPACKET datagram, the pod's netns file
//     descriptor passed as SCM_RIGHTS (WriteMessage, ReadMessage, Decode);
//   - Server: ztunnel's side, driving its set of served pods (Workloads);
//   - Client: one connection from the agent, a method per message, each waiting for its Ack;
//   - ReconnectingClient: the agent's side over time. It dials with backoff, replays the
//     agent's whole set of pods on every (re)connect (AddWorkload with a freshly opened
//     netns, or KeepWorkload when the netns can no longer be opened, then SnapshotSent),
//     sends AddWorkload/DelWorkload as pods come and go, and reconnects when ztunnel hangs
//     up or a message cannot be delivered.
//
// The socket is root's (package internal/unixsock): mode 0600 from the moment it appears,
// and the server serves only peers that SO_PEERCRED shows running as root or as ztunnel's
// own user.
package handoff
