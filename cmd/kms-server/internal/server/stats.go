package server

import (
	"context"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/cryptinit/cryptinit/netboot/kms"
)

// auditStats writes an audit line and counts a metric for RPCs that ended
// before reaching handle: oversized messages (refused by grpc-go before
// decoding), unknown methods, and the like. handle marks the RPCs it saw.
type auditStats struct{ s *Server }

type handledKey struct{}

func (a auditStats) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, handledKey{}, &rpcTag{method: info.FullMethodName})
}

type rpcTag struct {
	method  string
	handled atomic.Bool
}

// markHandled tells auditStats that handle logged this RPC itself.
func markHandled(ctx context.Context) {
	if t, ok := ctx.Value(handledKey{}).(*rpcTag); ok {
		t.handled.Store(true)
	}
}

func (a auditStats) HandleRPC(ctx context.Context, rs stats.RPCStats) {
	end, ok := rs.(*stats.End)
	if !ok || end.Client {
		return
	}
	t, ok := ctx.Value(handledKey{}).(*rpcTag)
	if !ok || t.handled.Load() || !strings.HasPrefix(t.method, "/"+kms.ServiceName+"/") {
		return
	}
	op := strings.ToLower(strings.TrimPrefix(t.method, "/"+kms.ServiceName+"/"))
	st := status.Convert(end.Error)
	ev := event{Time: end.BeginTime.UTC(), Op: op, Result: st.Code().String(), Message: st.Message(),
		Millis: float64(end.EndTime.Sub(end.BeginTime).Microseconds()) / 1000}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		ev.Peer = p.Addr.String()
		ev.Client, _ = clientIdentity(p)
	}
	a.s.metrics.requests.WithLabelValues(op, ev.Result).Inc()
	a.s.audit.log(&ev)
}

func (auditStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (auditStats) HandleConn(context.Context, stats.ConnStats)                       {}
