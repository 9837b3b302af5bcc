package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/dustin/go-humanize"
)

// A soft limit on the process's memory, for Go's collector. With the embedded NATS the
// process holds the store's per-subject state as well as SyVault's own, and Go's default
// (collect when the heap has doubled since the last collection) lets its memory grow to
// about twice what is in use before it collects: under a container's hard limit that is
// an out-of-memory kill waiting for a busy hour. Under a soft limit the collector runs
// earlier as the process nears it and gives free memory back to the system sooner; it
// never refuses an allocation, and Go bounds the collector's share of the CPU at half,
// so a limit below what is really in use costs CPU, not a crash.

// memoryLimitAuto is the share of a container's memory limit that --memory-limit auto
// sets: what is left is for what Go does not count (the binary's pages, the page cache
// charged to the container). With the embedded store that cache is its files', for which
// a tenth is too little (BENCHMARKS.md, run AN): such a deployment sets the limit itself.
const memoryLimitAuto = 0.9

// memoryLimitMin refuses a size that cannot be what was meant (a forgotten unit is a
// limit of a few hundred bytes, which would keep the collector running).
const memoryLimitMin = 32 << 20

// memoryLimitSize is a size as GOMEMLIMIT writes one, in binary units only: 512M could
// mean 512 million bytes or, as Docker's 512m does, 512 MiB.
var memoryLimitSize = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?) ?(B|KiB|MiB|GiB|TiB)$`)

// parseMemoryLimit checks a --memory-limit value: auto, off, or a size such as 240MiB or
// 1.5GiB. For a size it returns the bytes; for auto and off, 0.
func parseMemoryLimit(v string) (int64, error) {
	v = strings.TrimSpace(v)
	if strings.EqualFold(v, "auto") || strings.EqualFold(v, "off") {
		return 0, nil
	}
	bad := fmt.Errorf("--memory-limit (SYVAULT_MEMORY_LIMIT) must be auto, off, or a size of at least 32MiB in B, KiB, MiB, GiB or TiB, such as 240MiB or 1.5GiB, not %q", v)
	m := memoryLimitSize.FindStringSubmatch(v)
	if m == nil {
		return 0, bad
	}
	n, err := strconv.ParseFloat(m[1], 64)
	n *= map[string]float64{"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[m[2]]
	if err != nil || n < memoryLimitMin || n >= math.MaxInt64 {
		return 0, bad
	}
	return int64(n), nil
}

// memoryLimit decides the limit for a --memory-limit value: limit is 0 when this process
// sets none (Go's own GOMEMLIMIT, read at the start, then stands), and why says where it
// came from, for the log. goMemLimit is the GOMEMLIMIT environment variable; container
// reads the container's memory limit. The order: a size given to SyVault, then
// GOMEMLIMIT, then auto's share of the container's limit.
func memoryLimit(v, goMemLimit string, container func() (uint64, error)) (limit int64, why string) {
	v = strings.TrimSpace(v)
	switch {
	case strings.EqualFold(v, "off"):
		return 0, "--memory-limit off"
	case strings.EqualFold(v, "auto"):
		// An operator's GOMEMLIMIT (even GOMEMLIMIT=off) is a decision already taken;
		// auto is for those who took none.
		if goMemLimit != "" {
			return 0, "GOMEMLIMIT is set"
		}
		hard, err := container()
		switch {
		case errors.Is(err, memlimit.ErrNoLimit) || errors.Is(err, memlimit.ErrNoCgroup) || errors.Is(err, memlimit.ErrCgroupsNotSupported):
			return 0, "no container memory limit"
		case err != nil:
			// Not a reason to refuse to start: the process runs as it would without a
			// container, and the log says why.
			return 0, "the container's memory limit could not be read: " + err.Error()
		case hard == 0 || hard >= math.MaxInt64:
			return 0, "no container memory limit"
		}
		return int64(float64(hard) * memoryLimitAuto), fmt.Sprintf("%.0f%% of the container's %s", memoryLimitAuto*100, humanize.IBytes(hard))
	}
	n, _ := parseMemoryLimit(v) // checked by parseFlags
	if goMemLimit != "" {
		return n, "--memory-limit, over GOMEMLIMIT"
	}
	return n, "--memory-limit"
}

// applyMemoryLimit is setMemoryLimit, except in the tests, which run serve's start in
// their own process and must keep the collector as it is for the other tests.
var applyMemoryLimit = setMemoryLimit

// setMemoryLimit applies --memory-limit to this process and logs the limit in force.
func setMemoryLimit(v string, log *slog.Logger) {
	limit, why := memoryLimit(v, os.Getenv("GOMEMLIMIT"), memlimit.FromCgroup)
	if limit != 0 {
		debug.SetMemoryLimit(limit)
	}
	switch current := debug.SetMemoryLimit(-1); {
	case limit != 0:
		log.Info("memory limit", "soft_limit", humanize.IBytes(uint64(limit)), "from", why)
	case current != math.MaxInt64:
		log.Info("memory limit", "soft_limit", humanize.IBytes(uint64(current)), "from", "GOMEMLIMIT")
	default:
		log.Info("no memory limit", "because", why)
	}
}
