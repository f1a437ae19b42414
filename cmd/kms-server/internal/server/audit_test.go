package server

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// stalledWriter blocks every Write until released, like a stdout nobody
// reads; then it keeps what it is given.
type stalledWriter struct {
	release chan struct{}
	mu      sync.Mutex
	b       strings.Builder
}

func (w *stalledWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestAuditStalledWriter: with the writer stalled, logging returns at once
// until the queue is full, then waits at most auditWait per record and
// counts the drop; after the writer is released, close writes every record
// that was not dropped.
func TestAuditStalledWriter(t *testing.T) {
	w := &stalledWriter{release: make(chan struct{})}
	a := newAuditLog(w)
	// The writer buffers up to 64 KiB before its first (stalled) Write,
	// the queue holds auditQueue more; then records are dropped.
	n, limit := 0, auditQueue+2000
	for ; a.droppedCount() < 3 && n < limit; n++ {
		start := time.Now()
		a.log(&event{Op: "unseal", NodeUUID: "n", KeyID: uint32(n)})
		if took := time.Since(start); took > auditWait+time.Second {
			t.Fatalf("record %d: log blocked %v on a stalled writer, bound %v", n, took, auditWait)
		}
	}
	d := a.droppedCount()
	if d != 3 {
		t.Fatalf("%d records to a stalled writer, %d dropped; want drops once the queue (%d) is full", n, d, auditQueue)
	}
	close(w.release)
	a.close()
	if lines := strings.Count(w.b.String(), "\n"); lines+int(d) != n {
		t.Errorf("after close: %d lines + %d dropped, want %d records", lines, d, n)
	}
	a.log(&event{Op: "seal"}) // after close: counted, not written, no panic
	if a.droppedCount() != d+1 {
		t.Errorf("a record logged after close was not counted as dropped")
	}
}
