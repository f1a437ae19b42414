package server

import (
	"bufio"
	"encoding/json"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// event is one audit log line. It never holds request or response data.
type event struct {
	Time     time.Time `json:"time"`
	Peer     string    `json:"peer"`
	Client   string    `json:"client,omitempty"`
	NodeUUID string    `json:"node_uuid,omitempty"`
	Op       string    `json:"op"`
	Result   string    `json:"result"`
	Message  string    `json:"message,omitempty"`
	KeyID    uint32    `json:"key_id,omitempty"`
	Millis   float64   `json:"duration_ms"`
}

// Audit queue bounds: a request hands its record to the writer goroutine
// and returns; only when auditQueue records are already waiting (the
// writer is stalled, say on a stdout nobody reads) does it wait, at most
// auditWait, before the record is dropped and counted
// (kms_audit_dropped_total).
const (
	auditQueue = 4096
	auditWait  = 100 * time.Millisecond
)

// auditLog writes JSON lines, one per request, from a goroutine of its
// own, so that encoding and the write (about 10 us a request, and
// unbounded on a stalled pipe) are off the request path. close flushes
// every queued record.
type auditLog struct {
	queue   chan event
	done    chan struct{}
	dropped atomic.Uint64
	closeMu sync.RWMutex // log holds it shared so close never races a send
	closed  bool
}

func newAuditLog(w io.Writer) *auditLog {
	if w == nil {
		return nil
	}
	a := &auditLog{queue: make(chan event, auditQueue), done: make(chan struct{})}
	go a.write(w)
	return a
}

// write encodes queued records, flushing whenever the queue runs dry so a
// record reaches the file as soon as no other is waiting behind it.
func (a *auditLog) write(w io.Writer) {
	defer close(a.done)
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	for e := range a.queue {
		_ = enc.Encode(&e) // an audit write failure must not fail a request
		if len(a.queue) == 0 {
			_ = bw.Flush()
		}
	}
	_ = bw.Flush()
}

// log queues e. It returns at once unless the queue is full, then waits
// up to auditWait and drops the record if there is still no room.
func (a *auditLog) log(e *event) {
	if a == nil {
		return
	}
	a.closeMu.RLock()
	defer a.closeMu.RUnlock()
	if a.closed {
		a.dropped.Add(1)
		return
	}
	select {
	case a.queue <- *e:
		return
	default:
	}
	t := time.NewTimer(auditWait)
	defer t.Stop()
	select {
	case a.queue <- *e:
	case <-t.C:
		a.dropped.Add(1)
	}
}

// close stops taking records and waits until every queued one is written
// and flushed. Records logged after close are dropped and counted.
func (a *auditLog) close() {
	if a == nil {
		return
	}
	a.closeMu.Lock()
	if !a.closed {
		a.closed = true
		close(a.queue)
	}
	a.closeMu.Unlock()
	<-a.done
}

// droppedCount is how many records were lost to a full queue.
func (a *auditLog) droppedCount() uint64 {
	if a == nil {
		return 0
	}
	return a.dropped.Load()
}
