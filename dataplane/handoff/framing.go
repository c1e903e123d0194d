package handoff

import (
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	pb "github.com/ambientmesh/ambient-operator/api/handoff/v1alpha1"
)

const (
	// ProtocolVersion is the Hello.version this package speaks.
	ProtocolVersion = 1
	// MaxMessageSize bounds one datagram.
	MaxMessageSize = 64 << 10
	// maxFDsPerMessage sizes the ancillary buffer: more than the one allowed descriptor so
	// that a misbehaving peer's extras are received (and closed) rather than leaked in flight.
	maxFDsPerMessage = 8
)

// NoFD is passed to WriteMessage for a message without a descriptor.
const NoFD = -1

// WriteMessage sends msg as one datagram, with fd attached as SCM_RIGHTS when fd >= 0.
// The caller keeps ownership of fd (the kernel duplicates it into the receiver).
func WriteMessage(conn *net.UnixConn, msg *pb.Message, fd int) error {
	data, err := proto.Marshal(msg)
	if err != nil {
		return fmt.Errorf("encoding hand-off message: %w", err)
	}
	if len(data) > MaxMessageSize {
		return fmt.Errorf("hand-off message of %d bytes exceeds the %d byte limit", len(data), MaxMessageSize)
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	n, oobn, err := conn.WriteMsgUnix(data, oob, nil)
	if err != nil {
		return fmt.Errorf("sending hand-off message: %w", err)
	}
	if n != len(data) || oobn != len(oob) {
		return fmt.Errorf("short hand-off write: %d/%d bytes, %d/%d ancillary", n, len(data), oobn, len(oob))
	}
	return nil
}

// ReadMessage receives one datagram. fd is the descriptor that came with an AddWorkload,
// owned by the caller, or NoFD. io.EOF means the peer closed the connection. On any error,
// received descriptors are closed.
func ReadMessage(conn *net.UnixConn) (msg *pb.Message, fd int, err error) {
	buf := make([]byte, MaxMessageSize+1)
	oob := make([]byte, unix.CmsgSpace(maxFDsPerMessage*4))
	n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
	fds := parseRights(oob[:oobn])
	defer func() {
		if err != nil {
			closeAll(fds)
			fd = NoFD
		}
	}()
	if err != nil {
		return nil, NoFD, err
	}
	if n == 0 && oobn == 0 {
		return nil, NoFD, io.EOF // SOCK_SEQPACKET reports an orderly shutdown as an empty read
	}
	if flags&unix.MSG_TRUNC != 0 || n > MaxMessageSize {
		return nil, NoFD, fmt.Errorf("hand-off datagram larger than %d bytes", MaxMessageSize)
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return nil, NoFD, errors.New("hand-off datagram carried more descriptors than allowed")
	}
	msg, err = Decode(buf[:n], len(fds))
	if err != nil {
		return nil, NoFD, err
	}
	if len(fds) == 1 {
		return msg, fds[0], nil
	}
	return msg, NoFD, nil
}

// parseRights extracts descriptors from SCM_RIGHTS control messages, ignoring anything else.
func parseRights(oob []byte) []int {
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range cmsgs {
		got, err := unix.ParseUnixRights(&cmsgs[i])
		if err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}

func closeAll(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

// Decode parses and validates one datagram's bytes; numFDs is how many descriptors came
// with it. Exactly one payload must be set, AddWorkload must carry exactly one descriptor
// and no other message any.
func Decode(data []byte, numFDs int) (*pb.Message, error) {
	msg := &pb.Message{}
	if err := proto.Unmarshal(data, msg); err != nil {
		return nil, fmt.Errorf("decoding hand-off message: %w", err)
	}
	if err := Validate(msg, numFDs); err != nil {
		return nil, err
	}
	return msg, nil
}

// Validate checks the fields each message requires and the descriptor count.
func Validate(msg *pb.Message, numFDs int) error {
	wantFDs := 0
	var err error
	switch p := msg.GetPayload().(type) {
	case *pb.Message_Hello:
		if p.Hello.GetVersion() == 0 {
			err = errors.New("hello.version: required")
		}
	case *pb.Message_AddWorkload:
		wantFDs = 1
		err = validateAdd(p.AddWorkload)
	case *pb.Message_KeepWorkload:
		if p.KeepWorkload.GetUid() == "" {
			err = errors.New("keep_workload.uid: required")
		}
	case *pb.Message_DelWorkload:
		if p.DelWorkload.GetUid() == "" {
			err = errors.New("del_workload.uid: required")
		}
	case *pb.Message_SnapshotSent, *pb.Message_Ack:
	case nil:
		err = errors.New("hand-off message has no payload (unknown message type from a newer peer?)")
	}
	if err != nil {
		return err
	}
	if numFDs != wantFDs {
		return fmt.Errorf("%s: carries %d file descriptors, want %d", payloadName(msg), numFDs, wantFDs)
	}
	return nil
}

func validateAdd(a *pb.AddWorkload) error {
	var errs []error
	if a.GetUid() == "" {
		errs = append(errs, errors.New("add_workload.uid: required"))
	}
	if a.GetName() == "" {
		errs = append(errs, errors.New("add_workload.name: required"))
	}
	if a.GetNamespace() == "" {
		errs = append(errs, errors.New("add_workload.namespace: required"))
	}
	if a.GetServiceAccount() == "" {
		errs = append(errs, errors.New("add_workload.service_account: required"))
	}
	return errors.Join(errs...)
}

func payloadName(msg *pb.Message) string {
	if od := msg.ProtoReflect().WhichOneof(msg.ProtoReflect().Descriptor().Oneofs().ByName("payload")); od != nil {
		return string(od.Name())
	}
	return "message"
}

// Message constructors, so callers need not spell out the oneof wrappers.

func Hello() *pb.Message {
	return &pb.Message{Payload: &pb.Message_Hello{Hello: &pb.Hello{Version: ProtocolVersion}}}
}

func Add(w *pb.AddWorkload) *pb.Message {
	return &pb.Message{Payload: &pb.Message_AddWorkload{AddWorkload: w}}
}

func Keep(uid string) *pb.Message {
	return &pb.Message{Payload: &pb.Message_KeepWorkload{KeepWorkload: &pb.KeepWorkload{Uid: uid}}}
}

func Del(uid string) *pb.Message {
	return &pb.Message{Payload: &pb.Message_DelWorkload{DelWorkload: &pb.DelWorkload{Uid: uid}}}
}

func SnapshotSent() *pb.Message {
	return &pb.Message{Payload: &pb.Message_SnapshotSent{SnapshotSent: &pb.SnapshotSent{}}}
}

func Ack(err error) *pb.Message {
	ack := &pb.Ack{}
	if err != nil {
		ack.Error = err.Error()
	}
	return &pb.Message{Payload: &pb.Message_Ack{Ack: ack}}
}
