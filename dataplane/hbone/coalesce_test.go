package hbone

import (
	"bytes"
	"errors"
	"net"
	"testing"
)

// chunkConn returns the given chunks one per Read, then err.
type chunkConn struct {
	net.Conn
	chunks [][]byte
	err    error
	writes [][]byte
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, c.err
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func (c *chunkConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, append([]byte(nil), p...))
	return len(p), nil
}

func TestCoalescingConnReadsInOrderThenError(t *testing.T) {
	var want []byte
	var chunks [][]byte
	for i, size := range []int{20 << 10, 100 << 10, 300 << 10, 10, 64 << 10} {
		c := bytes.Repeat([]byte{byte('a' + i)}, size)
		chunks = append(chunks, c)
		want = append(want, c...)
	}
	boom := errors.New("connection reset")
	cc := newCoalescingConn(&chunkConn{chunks: chunks, err: boom})
	var got []byte
	buf := make([]byte, 5000) // smaller than the chunks, like tls's reads
	var err error
	for {
		var n int
		n, err = cc.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	if !errors.Is(err, boom) {
		t.Fatalf("final error %v, want %v", err, boom)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want %d in order", len(got), len(want))
	}
	if cc.rbuf != nil {
		t.Error("read buffer still held after the stream went quiet")
	}
}

func TestCoalescingConnReleasesBufferAtError(t *testing.T) {
	boom := errors.New("eof-ish")
	cc := newCoalescingConn(&chunkConn{chunks: [][]byte{make([]byte, 40<<10), make([]byte, 200<<10)}, err: boom})
	buf := make([]byte, 32<<10)
	for {
		if _, err := cc.Read(buf); err != nil {
			if !errors.Is(err, boom) {
				t.Fatalf("error %v", err)
			}
			break
		}
	}
	if cc.rbuf != nil {
		t.Error("read buffer still held after the connection failed")
	}
}

func TestCoalescingConnBatchesWrites(t *testing.T) {
	raw := &chunkConn{}
	cc := newCoalescingConn(raw)
	// Outside a batch a write passes through.
	if _, err := cc.Write([]byte("direct")); err != nil {
		t.Fatal(err)
	}
	cc.beginBatch()
	for i := 0; i < 10; i++ { // ten TLS records
		if _, err := cc.Write(bytes.Repeat([]byte{'r'}, 16<<10)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cc.endBatch(); err != nil {
		t.Fatal(err)
	}
	if len(raw.writes) != 2 || string(raw.writes[0]) != "direct" || len(raw.writes[1]) != 160<<10 {
		t.Fatalf("underlying writes: %d (sizes %v), want the direct one and one batch of 160 KiB", len(raw.writes), sizes(raw.writes))
	}
	// A batch larger than the buffer is flushed in pieces, nothing lost.
	raw.writes = nil
	cc.beginBatch()
	for i := 0; i < 40; i++ {
		if _, err := cc.Write(bytes.Repeat([]byte{'s'}, 16<<10)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cc.endBatch(); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, w := range raw.writes {
		total += len(w)
	}
	if total != 40*16<<10 || len(raw.writes) > 2 {
		t.Fatalf("big batch: %d writes totalling %d bytes", len(raw.writes), total)
	}
}

func sizes(ws [][]byte) []int {
	var s []int
	for _, w := range ws {
		s = append(s, len(w))
	}
	return s
}
