package server

import (
	"encoding/json"
	"io"
	"sync"
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

// auditLog writes JSON lines, one per request.
type auditLog struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func newAuditLog(w io.Writer) *auditLog {
	if w == nil {
		return nil
	}
	return &auditLog{enc: json.NewEncoder(w)}
}

func (a *auditLog) log(e *event) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	_ = a.enc.Encode(e) // an audit write failure must not fail the request
}
