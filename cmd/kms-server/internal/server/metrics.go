package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's Prometheus series, in a registry of its own.
type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kms_requests_total",
			Help: "KMS requests by operation and gRPC result code.",
		}, []string{"op", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kms_request_duration_seconds",
			Help:    "Time spent handling a KMS request, after decoding.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 4, 10),
		}, []string{"op"}),
	}
	m.registry.MustRegister(
		m.requests, m.duration,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kms_keyring_keys", Help: "Master keys in the keyring.",
		}, func() float64 { return float64(s.ring.Load().Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kms_keyring_newest_key_id", Help: "Id of the master key new seals use.",
		}, func() float64 { return float64(s.ring.Load().Newest()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kms_audit_dropped_total", Help: "Audit records dropped because the audit writer fell behind (stalled output).",
		}, func() float64 { return float64(s.audit.droppedCount()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kms_denied_nodes", Help: "Node UUIDs on the deny list.",
		}, func() float64 { return float64(s.deny.Load().len()) }),
	)
	return m
}
