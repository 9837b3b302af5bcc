package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// TestMemoryLimit_Flag: --memory-limit (or SYVAULT_MEMORY_LIMIT) is auto by default, and
// takes off or a size; a size without a unit, too small to be meant, or no size at all is
// refused at start, naming the flag.
func TestMemoryLimit_Flag(t *testing.T) {
	if cfg, err := parseFlags("serve", nil, &bytes.Buffer{}); err != nil || cfg.MemoryLimit != "auto" {
		t.Errorf("default: %q, %v", cfg.MemoryLimit, err)
	}
	for _, ok := range []string{"auto", "off", "Auto", " off ", "240MiB", "1.5GiB", "240 MiB", "33554432B"} {
		if _, err := parseFlags("serve", []string{"--memory-limit", ok}, &bytes.Buffer{}); err != nil {
			t.Errorf("--memory-limit %s: %v", ok, err)
		}
	}
	// "512M" and "512MB" are refused: GOMEMLIMIT takes binary units only, and 512M could be
	// meant as 512 million bytes or (as Docker's 512m) 512 MiB.
	for _, bad := range []string{"240", "1KiB", "-1GiB", "lots", "", "0.9", "512M", "512MB", "1,024MiB", "8192PiB", "9000000TiB", "1e3MiB"} {
		if _, err := parseFlags("serve", []string{"--memory-limit", bad}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--memory-limit") {
			t.Errorf("--memory-limit %q: %v", bad, err)
		}
	}
	t.Setenv("SYVAULT_MEMORY_LIMIT", "off")
	if cfg, err := parseFlags("serve", nil, &bytes.Buffer{}); err != nil || cfg.MemoryLimit != "off" {
		t.Errorf("SYVAULT_MEMORY_LIMIT=off: %q, %v", cfg.MemoryLimit, err)
	}
}

// TestMemoryLimit: auto takes 90 % of the container's limit, unless the operator set
// GOMEMLIMIT or there is no limit to read; a size is taken as given, over GOMEMLIMIT; off
// sets nothing.
func TestMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	container := func(limit uint64, err error) func() (uint64, error) {
		return func() (uint64, error) { return limit, err }
	}
	for _, c := range []struct {
		name, v, goMemLimit string
		container           func() (uint64, error)
		want                int64
	}{
		{"auto in a 512MiB container", "auto", "", container(512*mib, nil), 512 * mib * 9 / 10},
		{"auto, no limit", "auto", "", container(0, memlimit.ErrNoLimit), 0},
		{"auto, no cgroup", "auto", "", container(0, memlimit.ErrNoCgroup), 0},
		{"auto, unreadable", "auto", "", container(0, errors.New("permission denied")), 0},
		{"auto under GOMEMLIMIT", "auto", "300MiB", container(512*mib, nil), 0},
		{"a size", "240MiB", "", container(512*mib, nil), 240 * mib},
		{"a size over GOMEMLIMIT", "240MiB", "300MiB", container(0, memlimit.ErrNoLimit), 240 * mib},
		{"off", "off", "", container(512*mib, nil), 0},
		{"auto, no cgroups on this system", "auto", "", container(0, memlimit.ErrCgroupsNotSupported), 0},
		{"auto, a limit of nothing", "auto", "", container(0, nil), 0},
		{"auto, a limit past what a process can address", "auto", "", container(1<<63, nil), 0},
		{"a size, written loosely", " 1.5GiB ", "", container(0, nil), 1536 * mib},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, why := memoryLimit(c.v, c.goMemLimit, c.container)
			if got != c.want || why == "" {
				t.Errorf("memoryLimit(%q, GOMEMLIMIT=%q) = %d (%s), want %d", c.v, c.goMemLimit, got, why, c.want)
			}
		})
	}
}

// TestBinary_MemoryLimit: the server's --memory-limit is the limit Go's collector works
// to, as /metrics shows it.
func TestBinary_MemoryLimit(t *testing.T) {
	b := startBinary(t, "--memory-limit", "300MiB")
	if got := softLimit(t, b); got != 300<<20 {
		t.Errorf("go_gc_gomemlimit_bytes %.0f in /metrics, want 300MiB", got)
	}
	if !strings.Contains(b.logs.String(), `soft_limit="300 MiB"`) {
		t.Errorf("the start's log does not name the limit:\n%s", b.logs.String())
	}
}

// softLimit is the soft memory limit b's collector works to, from its /metrics.
func softLimit(t *testing.T, b *binary) float64 {
	t.Helper()
	v, found := scrapeServer(t, b)("go_gc_gomemlimit_bytes ")
	if !found {
		t.Fatal("no go_gc_gomemlimit_bytes in /metrics")
	}
	return v
}

// TestBinary_MemoryLimitAuto: in a container limited to 256 MiB (a memory cgroup of the
// test's making), the server's default --memory-limit is 90 % of that, as the collector
// reads it. Making a cgroup needs root and a writable cgroup tree (v1's memory
// controller, or v2's with memory delegated); without them the test is skipped.
func TestBinary_MemoryLimitAuto(t *testing.T) {
	var limit int64 = 256 << 20
	b := newBinary(t)
	b.env = withoutMemorySettings(os.Environ()) // what auto defers to is not the test's to pass on
	b.inCgroup(t, memoryCgroup(t, limit))
	b.start(t)
	if got, want := softLimit(t, b), float64(int64(float64(limit)*memoryLimitAuto)); got != want {
		t.Errorf("go_gc_gomemlimit_bytes %.0f, want %.0f", got, want)
	}
	if !strings.Contains(b.logs.String(), `from="90% of the container's 256 MiB"`) {
		t.Errorf("the start's log does not say where the limit came from:\n%s", b.logs.String())
	}
}

// inCgroup has each start of b, restarts included, go through a shell that joins the
// cgroup at dir and then becomes the server (the paths in its environment: none in the
// script to quote). The server is killed before the cgroup is removed: its cleanup is
// registered after the cgroup's.
func (b *binary) inCgroup(tb testing.TB, dir string) {
	tb.Helper()
	script := filepath.Join(tb.TempDir(), "syvault-in-container")
	body := "#!/bin/sh\necho $$ > \"$CONTAINER_PROCS\" && exec \"$CONTAINER_EXEC\" \"$@\"\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		tb.Fatal(err)
	}
	if b.env == nil {
		b.env = os.Environ()
	}
	b.env = append(b.env, "CONTAINER_PROCS="+filepath.Join(dir, "cgroup.procs"), "CONTAINER_EXEC="+b.bin)
	b.bin = script
}

// withoutMemorySettings is env without what sets a Go process's collector (GOGC,
// GOMEMLIMIT, and the server's own soft limit).
func withoutMemorySettings(env []string) []string {
	return slices.DeleteFunc(env, func(kv string) bool {
		return strings.HasPrefix(kv, "GOGC=") || strings.HasPrefix(kv, "GOMEMLIMIT=") || strings.HasPrefix(kv, "SYVAULT_MEMORY_LIMIT=")
	})
}

// memoryCgroup makes a memory cgroup limited to limit bytes, removed when the test ends,
// and returns its directory (its cgroup.procs moves a process into it); it skips the test
// where none can be made, or where the hierarchy it is made in is limited to less (a
// container's own limit, inside a cgroup namespace).
func memoryCgroup(t *testing.T, limit int64) (dir string) {
	t.Helper()
	dir, err := makeMemoryCgroup(t, limit)
	if err != nil {
		t.Skip(err)
	}
	return dir
}

// makeMemoryCgroup is memoryCgroup, saying why where it cannot make one.
func makeMemoryCgroup(tb testing.TB, limit int64) (dir string, err error) {
	tb.Helper()
	// cgroup v2 (unified) names the limit memory.max; v1 has its own memory hierarchy.
	root, file := "/sys/fs/cgroup", "memory.max"
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err != nil {
		root, file = "/sys/fs/cgroup/memory", "memory.limit_in_bytes"
	}
	// A name of its own: one left behind by a process killed before its cleanup, which
	// had this one's pid, is not taken over.
	dir, err = os.MkdirTemp(root, "syvault-test-")
	if err != nil {
		return "", fmt.Errorf("no memory cgroup can be made here (%v): needs root and a writable cgroup tree", err)
	}
	tb.Cleanup(func() {
		// The kernel may still count the server's exit for a moment after it is reaped.
		deadline := time.Now().Add(5 * time.Second)
		for err := os.Remove(dir); err != nil && !os.IsNotExist(err); err = os.Remove(dir) {
			if time.Now().After(deadline) {
				tb.Errorf("cgroup %s left behind: %v", dir, err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, file), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		return "", fmt.Errorf("the cgroup's memory limit cannot be set here (%v)", err)
	}
	// The kernel keeps the limit in whole pages.
	if effective := cgroupLimit(dir); effective < limit&^int64(os.Getpagesize()-1) {
		return "", fmt.Errorf("the cgroup hierarchy here is limited to %d bytes, less than the %d asked for", effective, limit)
	}
	return dir, nil
}

// cgroupLimit is the memory limit in force in the cgroup at dir, its ancestors' included
// as far as they can be seen (math.MaxInt64 for none).
func cgroupLimit(dir string) int64 {
	number := func(s string) (int64, bool) {
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		return n, err == nil // v2's "max" is none
	}
	if data, err := os.ReadFile(filepath.Join(dir, "memory.stat")); err == nil {
		for line := range strings.Lines(string(data)) {
			if v, ok := strings.CutPrefix(line, "hierarchical_memory_limit "); ok { // v1 reckons it itself
				if n, ok := number(v); ok {
					return n
				}
			}
		}
	}
	// v2: the least memory.max up to the hierarchy's root, which has none on a host and
	// is the container's own cgroup inside a cgroup namespace.
	limit := int64(math.MaxInt64)
	for d := dir; ; d = filepath.Dir(d) {
		if data, err := os.ReadFile(filepath.Join(d, "memory.max")); err == nil {
			if n, ok := number(string(data)); ok {
				limit = min(limit, n)
			}
		}
		if !strings.HasPrefix(d, "/sys/fs/cgroup/") {
			return limit
		}
	}
}
