package hbone

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// Many streams of one connection exchanging messages at once, so that their
// writes are committed together (coalesce.go): every stream must get back
// exactly its own bytes, in order.
func TestConcurrentStreamsKeepTheirBytes(t *testing.T) {
	const streams, rounds = 32, 200
	e := newEnv(t, envOpts{})
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			c, err := e.pool.Dial(ctx, e.dialReq())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			rnd := rand.New(rand.NewPCG(uint64(i), 1))
			for r := range rounds {
				msg := bytes.Repeat([]byte{byte(i), byte(r)}, 1+rnd.IntN(20<<10))
				if _, err := c.Write(msg); err != nil {
					errs <- fmt.Errorf("stream %d round %d: write: %w", i, r, err)
					return
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
					errs <- fmt.Errorf("stream %d round %d: echo of %d bytes differs (%v)", i, r, len(msg), err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(e.pool.Stats().Conns); n != 1 {
		t.Errorf("%d connections, want the streams to share one", n)
	}
}
