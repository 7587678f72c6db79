package gc

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/metrics"
)

// Cache is what eviction tells the serving side; *proxy.Proxy implements
// it.
type Cache interface {
	// FlushAccess persists when manifests were last served.
	FlushAccess(ctx context.Context) error
	Evictor
}

// Maintainer keeps a running mirror's store within its budget.
type Maintainer struct {
	Store   Store
	DB      DB
	Cache   Cache
	Options Options
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// PinnedTags is Options.PinnedTags when the options (which a reload
	// replaces) have none: the prefetch list's tags.
	PinnedTags func() []string

	mu    sync.Mutex // one collection at a time
	optMu sync.Mutex // Options, apart from mu: a reload or the status page must not wait for a collection
	sized bool       // the store was measured once; the proxy keeps the gauge current since
	refs  refCache   // what stored manifests point at, from the last plan
}

// SetOptions replaces the budget (a configuration reload).
func (m *Maintainer) SetOptions(o Options) {
	m.optMu.Lock()
	m.Options = o
	m.optMu.Unlock()
}

// CurrentOptions returns the budget in force (the last SetOptions).
func (m *Maintainer) CurrentOptions() Options {
	m.optMu.Lock()
	defer m.optMu.Unlock()
	return m.Options
}

// Plan flushes access times and returns what RunNow would evict under the
// budget in force, without evicting anything (gc --dry-run).
func (m *Maintainer) Plan(ctx context.Context) (*Plan, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.flushAndPlan(ctx)
}

// flushAndPlan flushes access times and plans under the budget in force.
// The caller holds m.mu.
func (m *Maintainer) flushAndPlan(ctx context.Context) (*Plan, error) {
	// A replica-id collision (ErrAlreadyExists) leaves the local access
	// times written: plan with them (RunOnce logs the collision).
	if err := m.Cache.FlushAccess(ctx); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return nil, err
	}
	opts := m.CurrentOptions()
	if opts.PinnedTags == nil {
		opts.PinnedTags = m.PinnedTags
	}
	return makePlan(ctx, m.Store, m.DB, opts, &m.refs)
}

// RunNow flushes access times, measures the store and evicts what the
// budget in force asks for (gc). Unlike RunOnce it always returns the plan,
// also when there is no budget or nothing to evict, so that the caller can
// show the store's figures.
func (m *Maintainer) RunNow(ctx context.Context) (*Plan, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	plan, err := m.flushAndPlan(ctx)
	if err != nil {
		return nil, err
	}
	if !m.sized && m.Metrics != nil {
		m.Metrics.StoreBytes.Set(float64(plan.Used))
	}
	m.sized = true
	return plan, m.carryOut(ctx, plan)
}

// Run flushes access times and enforces the budget every interval until ctx
// is done.
func (m *Maintainer) Run(ctx context.Context, interval time.Duration) {
	m.RunOnce(ctx)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.RunOnce(ctx)
		}
	}
}

// RunOnce flushes access times and, if the store is over its budget or an
// age limit applies, evicts. It returns the plan carried out, or nil.
func (m *Maintainer) RunOnce(ctx context.Context) *Plan {
	m.mu.Lock()
	defer m.mu.Unlock()
	log := m.log()
	if err := m.Cache.FlushAccess(ctx); err != nil {
		log.LogAttrs(ctx, slog.LevelWarn, "cannot record access times", slog.Any("err", err))
	}
	opts := m.CurrentOptions()
	budget := opts.MaxSize > 0 || opts.MaxAge > 0
	if m.sized && !budget {
		return nil // nothing to enforce, and no need to walk the disk every minute
	}
	// An error after ctx ended is the stop of a shutdown, not a failure:
	// what was deleted is consistent, the next run goes on.
	failed := func(msg string, err error) {
		if ctx.Err() != nil {
			log.LogAttrs(context.Background(), slog.LevelDebug, "maintenance stopped", slog.Any("err", err))
			return
		}
		log.LogAttrs(ctx, slog.LevelError, msg, slog.Any("err", err))
	}
	var used int64
	if err := m.Store.Walk(ctx, func(i blobstore.Info) error { used += i.Size; return nil }); err != nil {
		failed("cannot size the store", err)
		return nil
	}
	m.sized = true
	if m.Metrics != nil {
		m.Metrics.StoreBytes.Set(float64(used))
	}
	if (opts.MaxSize <= 0 || used <= opts.MaxSize) && opts.MaxAge <= 0 {
		return nil
	}
	plan, err := makePlan(ctx, m.Store, m.DB, opts, &m.refs)
	if err != nil {
		failed("eviction failed", err)
		return nil
	}
	if err := m.carryOut(ctx, plan); err != nil {
		failed("eviction failed", err)
	}
	return plan
}

func (m *Maintainer) log() *slog.Logger {
	if m.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Logger
}

// carryOut applies plan, then updates the metrics and logs each victim.
// The caller holds m.mu.
func (m *Maintainer) carryOut(ctx context.Context, plan *Plan) error {
	log := m.log()
	if err := Apply(ctx, m.Store, m.DB, plan, m.Cache); err != nil {
		return err
	}
	if m.Metrics != nil {
		// Less what went, not set to the plan's figure: content committed
		// since the store was measured is counted (the proxy adds it).
		m.Metrics.StoreBytes.Sub(float64(plan.Freed))
		m.Metrics.EvictedBytes.Add(float64(plan.Freed))
		m.Metrics.EvictedImages.Add(float64(len(plan.Victims)))
	}
	for _, v := range plan.Victims {
		log.LogAttrs(ctx, slog.LevelInfo, "evicted", slog.String("root", v.Root.String()), slog.Any("tags", v.Tags),
			slog.Time("last_pulled", v.LastAccess), slog.Int64("freed", v.Freed), slog.String("reason", v.Reason))
	}
	if plan.OverBudget {
		log.LogAttrs(ctx, slog.LevelWarn, "store still over its budget: the rest is pinned (pre-staged) or served within storage.minIdle",
			slog.Int64("used", plan.Used-plan.Freed), slog.Int64("budget", plan.Budget), slog.Int("pinned_images", plan.PinnedUnits),
			slog.Int("recent_images", plan.RecentUnits),
			slog.Int("delta_base_images", plan.BaseUnits))
	}
	return nil
}
