// Command chaos runs SyVault's chaos run (package internal/chaos): real binaries on a
// three-node NATS cluster and private databases, a bounded lease load, faults at seeded
// random moments, then the invariants. It exits 1 on any violation or failed run, 0 on a
// clean one; a missing database server is a skip (exit 0, said so) unless CI=true, where
// it is a failure.
//
//	go tool task chaos SEED=42 DURATION=25m RATE=15 CONCURRENCY=8 FAULT_EVERY=15s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/syvault/syvault/internal/chaos"
)

func main() {
	var cfg chaos.Config
	flag.Uint64Var(&cfg.Seed, "seed", 0, "seed of the faults and the load (0: a random one, printed)")
	flag.DurationVar(&cfg.Duration, "duration", 0, "how long the load and the faults last (default 2m)")
	flag.Float64Var(&cfg.Rate, "rate", 0, "lease operations a second (default 15)")
	flag.IntVar(&cfg.Concurrency, "concurrency", 0, "concurrent clients (default 8)")
	flag.DurationVar(&cfg.FaultEvery, "fault-every", 0, "mean time between faults (default 10s)")
	flag.DurationVar(&cfg.TargetEvery, "target-every", 0, "mean time between targets registered and removed under the faults (default 5s; negative: none)")
	flag.DurationVar(&cfg.Settle, "settle", 0, "longest wait for the system to settle after the faults (default 3m)")
	flag.BoolVar(&cfg.KeepDir, "keep", false, "keep the run's directory (logs, stores) afterwards")
	flag.Parse()
	cfg.PGBin = os.Getenv("PG_BIN") // as the PostgreSQL tests read it
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "chaos: unexpected argument %q: flags only (see -help)\n", flag.Arg(0))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := chaos.Run(ctx, cfg)
	switch {
	case errors.Is(err, chaos.ErrMissing) && os.Getenv("CI") != "true":
		fmt.Fprintf(os.Stderr, "chaos: SKIPPED: %v (with CI=true this is a failure)\n", err)
		return
	case err != nil:
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	case len(rep.Violations) > 0 || !rep.Settled:
		fmt.Fprintf(os.Stderr, "chaos: FAILED: %d invariant violation(s), settled: %v (seed %d)\n", len(rep.Violations), rep.Settled, rep.Seed)
		os.Exit(1)
	}
	fmt.Println("chaos: PASSED, 0 violations")
}
