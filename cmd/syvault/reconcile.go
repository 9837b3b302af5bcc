package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/internal/termtext"
	"github.com/syvault/syvault/workers"
)

// Reconcile compares the users SyVault made on each target (or --target) with the
// store and prints what no lease accounts for; with --apply it drops those orphans, each
// recorded in the audit trail. A dry run changes nothing. It fails when a target could
// not be reconciled or a drop failed, after reporting every target.
func (m *Main) Reconcile(ctx context.Context, stdout io.Writer) error {
	defer m.Close()
	sealer, err := m.unsealAndConnect(ctx, false)
	if err != nil {
		return err
	}
	if err := m.openWorkers(ctx, sealer, nil); err != nil {
		return err
	}
	var targets []events.Target
	if uid := m.Config.ReconcileTarget; uid != "" {
		t, err := m.proj.Target(ctx, uid)
		if err != nil {
			return err
		}
		targets = append(targets, t)
	} else if targets, err = m.proj.Targets(ctx); err != nil {
		return err
	}
	opts := workers.ReconcileOptions{Names: m.usernames, Leases: m.proj, Apply: m.Config.Apply, Unmarked: true}
	reports := make([]workers.TargetReport, 0, len(targets))
	var failed []string
	for _, t := range targets {
		rep, err := m.workers.Reconcile(ctx, t, opts)
		if err != nil {
			m.Logger.Warn("reconciliation of a target failed", "record_uid", t.RecordUID, "err", err)
			failed = append(failed, t.RecordUID)
		}
		reports = append(reports, rep)
	}
	if m.Config.Format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"apply": m.Config.Apply, "targets": reports}); err != nil {
			return err
		}
	} else {
		printReconcile(stdout, reports, m.Config.Apply)
	}
	if len(failed) > 0 {
		return fmt.Errorf("could not fully reconcile %s", strings.Join(failed, ", "))
	}
	return nil
}

// printReconcile writes the reports for a person: one paragraph per target.
func printReconcile(w io.Writer, reports []workers.TargetReport, apply bool) {
	if len(reports) == 0 {
		fmt.Fprintln(w, "no targets")
		return
	}
	orphans, dropped := 0, 0
	for _, r := range reports {
		// Names, errors and reasons come from the store and the databases: each is
		// quoted or escaped, so none can redraw a line or start one.
		fmt.Fprintf(w, "target %q (%q, %s): %d user(s) of its marker, %d of live leases", r.RecordUID, r.Name, termtext.Printable(string(r.Engine)), r.Marked, r.Live)
		if r.Foreign > 0 {
			fmt.Fprintf(w, "; %d user(s) named like lease users are not SyVault's as far as it can tell, left alone", r.Foreign)
		}
		fmt.Fprintln(w)
		if r.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", termtext.Printable(r.Error))
		}
		for _, f := range r.Findings {
			state := "would drop"
			switch {
			case f.Verdict == workers.VerdictUnverified:
				state = "unverified"
			case f.Dropped:
				state = "dropped"
				dropped++
			case f.Error != "":
				state = "drop failed: " + f.Error
			case apply:
				state = "not dropped"
			}
			if f.Verdict == workers.VerdictOrphan {
				orphans++
			}
			fmt.Fprintf(w, "  %-15s %s: %s\n", termtext.Printable(f.Username), termtext.Printable(state), termtext.Printable(f.Reason))
		}
	}
	switch {
	case apply:
		fmt.Fprintf(w, "%d orphaned user(s), %d dropped\n", orphans, dropped)
	case orphans > 0:
		fmt.Fprintf(w, "%d orphaned user(s); nothing was changed: run again with --apply to drop them\n", orphans)
	default:
		fmt.Fprintln(w, "no orphaned users")
	}
}

// sweepsBucket holds one entry per sweep slot, so that of the processes sweeping
// periodically, one sweeps each slot.
const sweepsBucket = "SYVAULT_SWEEPS"

// startSweep reconciles every target every --reconcile-interval, dropping orphans, until
// runCtx ends. Every process running workers ticks, but the first to reserve a slot's
// entry sweeps it, so each slot is swept once across the deployment.
func (m *Main) startSweep(ctx, runCtx context.Context) error {
	every := m.Config.ReconcileInterval
	slots, err := m.store.OpenNames(ctx, sweepsBucket, "SyVault periodic reconciliation: who swept which slot", 24*time.Hour, 0)
	if err != nil {
		return err
	}
	log := m.Logger.With("component", "reconcile")
	m.goRun("reconcile", func() error {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return nil
			case now := <-t.C:
				slot := strconv.FormatInt(now.UnixNano()/int64(every), 10)
				if ok, err := slots.Reserve(runCtx, "sweep-"+slot, nil, 0); err != nil || !ok {
					continue // another process sweeps this slot, or NATS is away: the next tick tries again
				}
				m.sweep(runCtx, log)
			}
		}
	})
	return nil
}

// sweep reconciles every target once, dropping orphans, and logs what it did.
func (m *Main) sweep(ctx context.Context, log *slog.Logger) {
	targets, err := m.proj.Targets(ctx)
	if err != nil {
		log.Warn("sweep: could not list targets", "err", err)
		return
	}
	for _, t := range targets {
		rep, err := m.workers.Reconcile(ctx, t, workers.ReconcileOptions{Names: m.usernames, Leases: m.proj, Apply: true})
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("sweep: reconciliation of a target failed", "record_uid", t.RecordUID, "err", err)
		}
		if len(rep.Findings) > 0 {
			log.Info("sweep: orphaned users", "record_uid", t.RecordUID, "found", len(rep.Findings))
		}
	}
}
