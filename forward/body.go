package forward

import (
	"errors"
	"io"
	"sync"
)

// errBodyReleased is what a late read of a request body gets once Send has
// returned.
var errBodyReleased = errors.New("request body read after Send returned")

// bodyGuard lends the caller's body to the HTTP transport for the duration
// of one Send. net/http may still read a request body after RoundTrip has
// returned (the write of a cancelled or timed-out request can finish in
// another goroutine); release makes such late reads fail instead of reading
// memory the caller may already be reusing for the next request.
type bodyGuard struct {
	mu       sync.Mutex
	body     []byte // nil once released
	released bool
}

// reader returns a fresh reader over the whole body; it is also the
// request's GetBody, so redirects and transport-level retries resend the
// same bytes.
func (g *bodyGuard) reader() (io.ReadCloser, error) {
	return &guardedReader{g: g}, nil
}

// release ends the loan. When it returns, no reader is copying from the body
// and none will.
func (g *bodyGuard) release() {
	g.mu.Lock()
	g.released = true
	g.body = nil
	g.mu.Unlock()
}

// guardedReader reads the body of a bodyGuard without copying it up front.
type guardedReader struct {
	g   *bodyGuard
	off int
}

func (r *guardedReader) Read(p []byte) (int, error) {
	r.g.mu.Lock()
	defer r.g.mu.Unlock()
	if r.g.released {
		return 0, errBodyReleased
	}
	if r.off >= len(r.g.body) {
		return 0, io.EOF
	}
	n := copy(p, r.g.body[r.off:])
	r.off += n
	return n, nil
}

// Close does nothing: the body belongs to the caller of Send.
func (r *guardedReader) Close() error { return nil }
