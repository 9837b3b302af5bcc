package main

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/projections"
)

// metrics is the process's Prometheus registry and the observers that feed it. It is
// the one place that knows Prometheus; the API and the workers report through their
// Observer interfaces.
type metrics struct {
	reg           *prometheus.Registry
	errorLog      *log.Logger
	creates       *prometheus.CounterVec
	revokes       *prometheus.CounterVec
	rateLimited   *prometheus.CounterVec
	createLatency prometheus.Histogram
	revokeLatency prometheus.Histogram
	expiryLag     prometheus.Histogram
	driverCalls   *prometheus.HistogramVec
	abandoned     prometheus.Counter

	mu      sync.Mutex
	failing map[string]struct{} // leases whose last revocation attempt here failed
}

func newMetrics(proj *projections.Projections, store *jsstore.Store, logger *slog.Logger) *metrics {
	buckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20}
	m := &metrics{
		reg:      prometheus.NewRegistry(),
		errorLog: slog.NewLogLogger(logger.With("component", "metrics").Handler(), slog.LevelWarn),
		creates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "syvault_lease_creates_total",
			Help: "Lease requests answered, by outcome (ok or the error code)."}, []string{"outcome"}),
		revokes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "syvault_lease_revokes_total",
			Help: "Revoke requests answered, by outcome (ok or the error code)."}, []string{"outcome"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "syvault_rate_limited_total",
			Help: "App clients' requests past --client-rate-limit: tokens, lease creates and renewals refused (token, create, renew), and refused mutations left out of the audit trail (denied)."}, []string{"action"}),
		createLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "syvault_lease_create_seconds",
			Help: "Time a lease request waited for its answer.", Buckets: buckets}),
		revokeLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "syvault_lease_revoke_seconds",
			Help: "Time a revoke request waited for its answer.", Buckets: buckets}),
		expiryLag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "syvault_expiry_lag_seconds",
			Help: "How long after expires_at an expiry was recorded.", Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10, 30, 60}}),
		driverCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "syvault_database_operation_seconds",
			Help:    "Database operations on targets (prepare, create_user, drop_user, ...) by engine and outcome (ok or the error code).",
			Buckets: buckets}, []string{"engine", "op", "outcome"}),
		abandoned: prometheus.NewCounter(prometheus.CounterOpts{Name: "syvault_revocations_abandoned_total",
			Help: "Revocations an admin gave up in this process (lease.abandoned, by a forced revoke or a target's forced removal): each may leave its user on the database."}),
		failing: map[string]struct{}{},
	}
	m.reg.MustRegister(m.creates, m.revokes, m.rateLimited, m.createLatency, m.revokeLatency, m.expiryLag, m.driverCalls, m.abandoned,
		// The collector's share of the CPU: with the embedded NATS its per-subject state is
		// this process's heap, and marking it is a cost that grows with the number of leases.
		// (The soft memory limit in force, go_gc_gomemlimit_bytes, is among the defaults.)
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/cpu/classes/gc/`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "syvault_revocations_pending_retry",
			Help: "Leases whose revocation failed in this process and waits for a retry."}, func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			return float64(len(m.failing))
		}),
		&activeCollector{active: proj.ActiveByTarget, connected: store.Connected, desc: prometheus.NewDesc("syvault_leases_active",
			"Active (and revoking) leases, by target.", []string{"record_uid"}, nil)},
		newStoreCollector(store),
	)
	return m
}

func (m *metrics) handler() http.Handler {
	// A collector that cannot reach the store leaves its own metrics out of the scrape,
	// not the process's: an outage is when the rest is wanted.
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError, ErrorLog: m.errorLog})
}

func (m *metrics) LeaseCreated(_, outcome string, took time.Duration) {
	m.creates.WithLabelValues(outcome).Inc()
	m.createLatency.Observe(took.Seconds())
}

func (m *metrics) LeaseRevoked(outcome string, took time.Duration) {
	m.revokes.WithLabelValues(outcome).Inc()
	m.revokeLatency.Observe(took.Seconds())
}

func (m *metrics) RateLimited(action string) { m.rateLimited.WithLabelValues(action).Inc() }

func (m *metrics) RevocationFailed(leaseID string) {
	m.mu.Lock()
	m.failing[leaseID] = struct{}{}
	m.mu.Unlock()
}

func (m *metrics) RevocationDone(leaseID string) {
	m.mu.Lock()
	delete(m.failing, leaseID)
	m.mu.Unlock()
}

func (m *metrics) Expired(lag time.Duration) { m.expiryLag.Observe(lag.Seconds()) }

func (m *metrics) DriverCall(engine events.Engine, op string, took time.Duration, code events.Code) {
	outcome := events.OutcomeOK
	if code != "" {
		outcome = string(code)
	}
	m.driverCalls.WithLabelValues(string(engine), op, outcome).Observe(took.Seconds())
}

// errStoreDown is what a collector reads from the store reports while NATS is not
// connected, at once rather than after a request's timeout.
var errStoreDown = errors.New("the event store is not connected")

// fromStore is a collector's read of the store: ok is false, and the failure reported
// against desc, when NATS is not connected or does not answer.
func fromStore[T any](ch chan<- prometheus.Metric, desc *prometheus.Desc, connected func() bool, read func(context.Context) (T, error)) (v T, ok bool) {
	if !connected() {
		ch <- prometheus.NewInvalidMetric(desc, errStoreDown)
		return v, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := read(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(desc, err)
		return v, false
	}
	return v, true
}

// activeCollector counts active leases per target at scrape time from the projection's
// index, so every process reports the deployment-wide number. A count is kept for
// activeFor: /metrics answers whoever reaches it, and each count asks NATS for every
// (target, client) pair with active leases (338 ms at 60,000 pairs), so scrapes that
// come faster than that share one.
type activeCollector struct {
	active    func(context.Context) (map[string]int, error) // the projection's ActiveByTarget
	connected func() bool
	desc      *prometheus.Desc

	mu     sync.Mutex
	at     time.Time
	counts map[string]int
}

// activeFor is how long a count of the active leases serves scrapes: well under any
// scrape interval Prometheus is given.
const activeFor = 5 * time.Second

func (c *activeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// count returns the active leases per target, from the last count if it is recent.
func (c *activeCollector) count(ctx context.Context) (map[string]int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts != nil && time.Since(c.at) < activeFor {
		return c.counts, nil
	}
	counts, err := c.active(ctx)
	if err != nil {
		return nil, err
	}
	c.counts, c.at = counts, time.Now()
	return counts, nil
}

func (c *activeCollector) Collect(ch chan<- prometheus.Metric) {
	counts, ok := fromStore(ch, c.desc, c.connected, c.count)
	if !ok {
		return
	}
	for uid, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), uid)
	}
}

// storeCollector reports what each of SyVault's streams holds, at scrape time, from one
// stream list request. The events stream keeps a subject for every lease ever made, so
// with churn its subjects, and the memory and start time NATS spends on them, grow
// without limit while the number of active leases stays flat: this is where an operator
// sees it coming.
type storeCollector struct {
	store                     *jsstore.Store
	messages, bytes, subjects *prometheus.Desc
}

func newStoreCollector(store *jsstore.Store) *storeCollector {
	label := []string{"stream"}
	return &storeCollector{
		store:    store,
		messages: prometheus.NewDesc("syvault_store_messages", "Messages held, by stream (KV buckets are streams named KV_<bucket>).", label, nil),
		bytes:    prometheus.NewDesc("syvault_store_bytes", "Bytes held, by stream.", label, nil),
		subjects: prometheus.NewDesc("syvault_store_subjects",
			"Distinct subjects held, by stream: NATS keeps state in memory for each and rebuilds it at every start. SYVAULT_EVENTS holds one for every lease ever made.", label, nil),
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.messages
	ch <- c.bytes
	ch <- c.subjects
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	sizes, ok := fromStore(ch, c.subjects, c.store.Connected, c.store.Sizes)
	if !ok {
		return
	}
	for _, s := range sizes {
		ch <- prometheus.MustNewConstMetric(c.messages, prometheus.GaugeValue, float64(s.Messages), s.Name)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(s.Bytes), s.Name)
		ch <- prometheus.MustNewConstMetric(c.subjects, prometheus.GaugeValue, float64(s.Subjects), s.Name)
	}
}
