// Package metrics owns wabridge's Prometheus metrics: one registry, the
// counters and histograms the other parts update through small hooks, and
// the handler that serves them in the Prometheus text format.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configure New. Each func, when set, is read at scrape time.
type Options struct {
	// QueueDepth returns how many jobs wait or run.
	QueueDepth func() float64
	// DeadLetters returns how many dead letters wait for a decision.
	DeadLetters func() float64
	// RateLimitWaits and RateLimitWaited return how often, and for how
	// many seconds in all, calls to Bitrix24 waited for the rate limiter.
	RateLimitWaits  func() float64
	RateLimitWaited func() float64
	// TokenRefreshes returns the Bitrix24 token refreshes that succeeded
	// and that failed.
	TokenRefreshes func() (ok, failed float64)
	// GroupCommits returns how many transactions the group-commit writer
	// committed and how many writes they carried.
	GroupCommits func() (commits, writes float64)
	// WebhooksWaiting returns how many acknowledged webhooks wait to be
	// processed; IntakePauses how often processing paused to let a burst
	// of webhooks be acknowledged first.
	WebhooksWaiting func() float64
	IntakePauses    func() float64
}

// Metrics holds the collectors. It is safe for concurrent use.
type Metrics struct {
	reg          *prometheus.Registry
	webhooks     *prometheus.CounterVec
	relayLatency *prometheus.HistogramVec
	apiCalls     *prometheus.CounterVec
	apiSeconds   *prometheus.HistogramVec
	refusals     *prometheus.CounterVec
}

// New registers every collector on a fresh registry.
func New(o Options) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wabridge_webhooks_total",
			Help: "Webhook calls received, by source (whatsapp, bitrix) and audit status (accepted, rejected).",
		}, []string{"source", "status"}),
		relayLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wabridge_relay_latency_seconds",
			Help:    "Time from a message's arrival at the bridge to its acceptance by the other side, by direction (inbound: WhatsApp to Bitrix24, outbound: Bitrix24 to WhatsApp).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900},
		}, []string{"direction"}),
		apiCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wabridge_api_calls_total",
			Help: "Requests to Meta's Graph API and Bitrix24's REST API, by api, method and result (the HTTP status class, or 'network').",
		}, []string{"api", "method", "result"}),
		apiSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wabridge_api_call_seconds",
			Help:    "Duration of requests to Meta and Bitrix24, by api.",
			Buckets: prometheus.DefBuckets,
		}, []string{"api"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wabridge_refusals_dropped_total",
			Help: "Refused webhook calls, by source (whatsapp, bitrix), not written to the audit log because refusals came faster than 60 a minute.",
		}, []string{"source"}),
	}
	// Both sources are present from the start, so an alert on the rate
	// sees a zero rather than no series.
	m.refusals.WithLabelValues("whatsapp")
	m.refusals.WithLabelValues("bitrix")
	m.reg.MustRegister(m.webhooks, m.relayLatency, m.apiCalls, m.apiSeconds, m.refusals,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gauge := func(name, help string, f func() float64) {
		if f != nil {
			m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
		}
	}
	counter := func(name, help string, f func() float64) {
		if f != nil {
			m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
		}
	}
	gauge("wabridge_queue_depth", "Jobs waiting or running.", o.QueueDepth)
	gauge("wabridge_dead_letters", "Dead letters waiting for a retry or a discard.", o.DeadLetters)
	counter("wabridge_bitrix_rate_limit_waits_total", "Bitrix24 calls that waited for the rate limiter.", o.RateLimitWaits)
	counter("wabridge_bitrix_rate_limit_wait_seconds_total", "Seconds Bitrix24 calls spent waiting for the rate limiter.", o.RateLimitWaited)
	if o.TokenRefreshes != nil {
		counter("wabridge_bitrix_token_refreshes_total", "Bitrix24 access-token refreshes that succeeded.", func() float64 { ok, _ := o.TokenRefreshes(); return ok })
		counter("wabridge_bitrix_token_refresh_failures_total", "Bitrix24 access-token refreshes that failed.", func() float64 { _, f := o.TokenRefreshes(); return f })
	}
	if o.GroupCommits != nil {
		counter("wabridge_db_commits_total", "Transactions committed by the group-commit writer (each one fsync).", func() float64 { c, _ := o.GroupCommits(); return c })
		counter("wabridge_db_group_writes_total", "Writes carried by those transactions; divided by the commits, the writes per fsync.", func() float64 { _, w := o.GroupCommits(); return w })
	}
	gauge("wabridge_webhooks_waiting", "Acknowledged webhooks waiting to be processed.", o.WebhooksWaiting)
	counter("wabridge_intake_pauses_total", "Pauses of webhook processing that let a burst be acknowledged first.", o.IntakePauses)
	return m
}

// Webhook counts one webhook call.
func (m *Metrics) Webhook(source, status string) {
	m.webhooks.WithLabelValues(source, status).Inc()
}

// RefusalDropped counts one refused call from source whose audit row was
// not written.
func (m *Metrics) RefusalDropped(source string) {
	m.refusals.WithLabelValues(source).Inc()
}

// Relayed records how long a message took from arrival to acceptance by
// the other side.
func (m *Metrics) Relayed(direction string, d time.Duration) {
	m.relayLatency.WithLabelValues(direction).Observe(d.Seconds())
}

// Observer returns a hook for the API clients' Observe option, for api
// "meta" or "bitrix".
func (m *Metrics) Observer(api string) func(method string, status int, elapsed time.Duration) {
	return func(method string, status int, elapsed time.Duration) {
		result := "network"
		if status > 0 {
			result = strconv.Itoa(status/100) + "xx"
		}
		m.apiCalls.WithLabelValues(api, method, result).Inc()
		m.apiSeconds.WithLabelValues(api).Observe(elapsed.Seconds())
	}
}

// Handler serves the registry in the Prometheus text format. The caller
// puts it behind the admin check.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
