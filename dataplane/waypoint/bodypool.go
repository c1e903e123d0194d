package waypoint

import (
	"math/bits"
	"sync"
)

// Request bodies up to maxInlineBody are read into buffers recycled by size class
// (powers of two from minBodyClass bytes): the waypoint's common request has a small
// body, and a new buffer for each was a sixth of its allocated bytes. A buffer is only
// recycled when nothing can still read it (see exchange.recycleBody).
const (
	minBodyClassBits = 9 // 512 bytes
	maxBodyClassBits = 16
)

var bodyBufferPools [maxBodyClassBits - minBodyClassBits + 1]sync.Pool

// bodyClass is the index of the smallest size class that holds n bytes
// (0 < n <= maxInlineBody).
func bodyClass(n int) int {
	return max(bits.Len(uint(n-1)), minBodyClassBits) - minBodyClassBits
}

// getBodyBuffer returns a buffer of length n (0 < n <= maxInlineBody), recycled when
// one of its size class is free.
func getBodyBuffer(n int) *[]byte {
	class := bodyClass(n)
	b, _ := bodyBufferPools[class].Get().(*[]byte)
	if b == nil {
		s := make([]byte, 1<<(class+minBodyClassBits))
		b = &s
	}
	*b = (*b)[:n]
	return b
}

// putBodyBuffer hands b, from getBodyBuffer, back for another request.
func putBodyBuffer(b *[]byte) {
	bodyBufferPools[bodyClass(cap(*b))].Put(b)
}
