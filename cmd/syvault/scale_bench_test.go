package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/workers/drivertest"
)

// The scale benchmark (go tool task bench-scale). Sizes are flags, so that a quick run and
// the documented one are the same code:
//
//	go test -run '^$' -bench '^BenchmarkScale$' -benchtime 1x -timeout 0 ./cmd/syvault/ \
//	    -args -scale.leases 100000 -scale.events 1000000 -scale.storm 10000
var (
	scaleLeases = flag.Int("scale.leases", 2000, "leases created through the HTTP API on real databases (mostly PostgreSQL)")
	scaleEvents = flag.Int("scale.events", 20000, "leases appended and projected without databases (the event and read layer)")
	scaleStorm  = flag.Int("scale.storm", 1000, "leases of an expiry storm, expiring within one minute")
	// Where the server's heap profiles go, one per memory reading, for `go tool pprof`.
	scaleProfile = flag.String("scale.profile", "", "directory to write the server's heap profiles to")
	// perf sees PostgreSQL, the server and the kernel in one profile, which Go's profiler
	// cannot: a revocation's cost is shared between them.
	scalePerf = flag.String("scale.perf", "", "directory to write a system-wide `perf record -g` of each revoke round to (needs perf and the right to use it)")
	// The deployed shape: SyVault joins a NATS server of its own process (--nats-url), so
	// the memory of each is seen apart and a restart is SyVault's alone.
	scaleExternal = flag.Bool("scale.external-nats", false, "run the server against a separate nats-server process instead of its embedded one")
	// A container's hard limit, the kernel's: what auto reads; it counts the page cache of
	// the store's files, which the kernel reclaims at the limit, and kills the server for
	// what it cannot reclaim. The databases phase only: the event layer at its default size
	// outgrows any container small enough to matter.
	scaleContainer = flag.String("scale.container-memory", "", "run the server in a memory cgroup of this hard limit (e.g. 256MiB; needs root and a writable cgroup tree)")
	// A soft limit for the server's collector, as a deployment sets one.
	scaleMemoryLimit = flag.String("scale.memory-limit", "", "the server's --memory-limit (e.g. 240MiB; default: the server's own default, auto)")
)

// natsProcess is a nats-server built from the module's version, with JetStream, on a
// free port; its PID is for reading its memory.
type natsProcess struct {
	url string
	cmd *exec.Cmd
	dir string
}

func startNATS(b *testing.B) *natsProcess {
	b.Helper()
	dir := b.TempDir()
	bin := filepath.Join(dir, "nats-server")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		b.Fatalf("build nats-server: %v\n%s", err, out)
	}
	addr := freeAddr(b)
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "-a", host, "-p", port, "-js", "-sd", filepath.Join(dir, "store"))
	cmd.Env = withoutMemorySettings(os.Environ()) // its collector as it ships
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	n := &natsProcess{url: "nats://" + addr, cmd: cmd, dir: filepath.Join(dir, "store")}
	eventually(b, 30*time.Second, "nats-server up", func() (bool, error) {
		nc, err := nats.Connect(n.url)
		if err == nil {
			nc.Close()
		}
		return err == nil, err
	})
	return n
}

// scaleBinary starts the benchmark's server, with its profiler on when profiles are asked for.
func scaleBinary(b *testing.B, args ...string) *binary {
	if *scaleProfile != "" {
		// Made now: finding it missing after a run's hour of work would lose the run.
		if err := os.MkdirAll(*scaleProfile, 0o755); err != nil {
			b.Fatal(err)
		}
		args = append(args, "--debug-listen", freeAddr(b))
	}
	if *scaleMemoryLimit != "" {
		if _, err := parseMemoryLimit(*scaleMemoryLimit); err != nil {
			b.Fatal(err) // now, not as a server that never becomes ready
		}
		args = append(args, "--memory-limit", *scaleMemoryLimit)
	}
	if *scaleContainer != "" && *scaleEvents > 0 {
		b.Fatal("-scale.container-memory runs the databases phase only: give -scale.events 0 (EVENTS=0)")
	}
	bin := newBinary(b, args...)
	// The server's collector is set by the flags alone (-scale.memory-limit, or auto):
	// settings inherited from the caller's environment would make runs differ unseen.
	bin.env = withoutMemorySettings(os.Environ())
	if *scaleContainer != "" {
		limit, err := parseMemoryLimit(*scaleContainer)
		if err != nil || limit == 0 {
			b.Fatalf("-scale.container-memory %q: want a size such as 256MiB", *scaleContainer)
		}
		if scaleCgroup, err = makeMemoryCgroup(b, limit); err != nil {
			b.Fatal(err) // asked for: a run without the container would pass for one with it
		}
		bin.inCgroup(b, scaleCgroup)
	}
	bin.start(b)
	return bin
}

// BenchmarkScale reports, for a server binary built from this tree: create and revoke
// rates as the number of active leases grows, list and get latencies, an expiry storm's
// lag, the server's memory, its data directory and its restart time.
func BenchmarkScale(b *testing.B) {
	if *scaleEvents > 0 {
		b.Run("events", func(b *testing.B) { benchEventLayer(b, *scaleEvents) })
	}
	if *scaleLeases > 0 || *scaleStorm > 0 {
		b.Run("databases", func(b *testing.B) { benchDatabases(b, *scaleLeases, *scaleStorm) })
	}
}

// report prints one line of the results (to standard output: a benchmark's log is cut
// short).
func report(_ *testing.B, what string, v float64, unit string) {
	fmt.Printf("SCALE %-64s %12.2f %s\n", what, v, unit)
}

// rss returns the resident set size of pid, and its peak, in MiB.
func rss(pid int) (now, peak float64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			now = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return now, peak
}

func dirMiB(dir string) float64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return float64(n) / (1 << 20)
}

// restart stops b with SIGTERM and starts it again, returning the time from the start to
// the first ready answer.
func restart(b *testing.B, bin *binary) time.Duration {
	b.Helper()
	if err := bin.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	<-bin.done
	start := time.Now()
	bin.launch(b)
	// Probed every 2 ms: eventually's growing steps (up to 200 ms) would be timed with it,
	// and made 0.3 s at 100,000 leases read as 0.53.
	for {
		ok, err := bin.ready()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > 30*time.Second {
			b.Fatalf("server not ready 30 s after a restart (last error: %v)", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// latencies calls fn n times and returns its p50 and p99 in milliseconds.
func latencies(b *testing.B, n int, fn func(i int) error) (p50, p99 float64) {
	b.Helper()
	lat := make([]time.Duration, n)
	for i := range n {
		start := time.Now()
		if err := fn(i); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(start)
	}
	return pct(lat, 50), pct(lat, 99)
}

// parallelDo runs fn(0..n-1) on c goroutines and returns the wall time.
func parallelDo(b *testing.B, c, n int, fn func(i int) error) time.Duration {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	start := time.Now()
	for range c {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || failed.Load() != nil {
					return
				}
				if err := fn(i); err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// benchEventLayer appends n leases (requested, activated, and each one's expiry
// schedule) straight to the server's NATS, as if workers had created them, lets its
// projector project them, and measures the read side, memory and restart at that size.
func benchEventLayer(b *testing.B, n int) {
	var bin *binary
	var nc *nats.Conn
	var err error
	if *scaleExternal {
		ns := startNATS(b)
		scaleNATS = ns
		bin = scaleBinary(b, "--nats-url", ns.url, "--components", "api")
		nc, err = nats.Connect(ns.url)
	} else {
		natsAddr := freeAddr(b)
		bin = scaleBinary(b, "--nats-listen", natsAddr, "--components", "api")
		opt, oerr := nats.NkeyOptionFromSeed(filepath.Join(bin.dir, NATSClientSeedFile))
		if oerr != nil {
			b.Fatal(oerr)
		}
		nc, err = nats.Connect("nats://"+natsAddr, opt)
	}
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	store, err := jsstore.Open(ctx, nc, jsstore.Config{})
	if err != nil {
		b.Fatal(err)
	}
	admin := bin.admin(b)
	const targets = 10
	// An app client holding three leases among all the others.
	pub, priv := mustKeyPair(b)
	app, err := admin.CreateClient(ctx, client.AppClient{Name: "loner", PublicKey: pub, Role: "app"})
	if err != nil {
		b.Fatal(err)
	}
	loner := app.ClientID
	target := func(i int) events.Target {
		return events.Target{RecordUID: fmt.Sprintf("SCALE%07d", i%targets), Engine: events.PostgreSQL}
	}
	start := time.Now()
	took := parallelDo(b, 32, n, func(i int) error {
		id := uuid.Must(uuid.NewV7()).String()
		owner := "c" + strconv.Itoa(i%50)
		if i%(n/3+1) == 7 {
			owner = loner
		}
		now := time.Now()
		req := events.RequestLease(events.LeaseRequest{LeaseID: id, ClientID: owner, Target: target(i), TTLSeconds: 86400,
			Username: "vf_tmp_" + id[len(id)-8:], SealedPassword: []byte("sealed-elsewhere"), Now: now, Deadline: now.Add(time.Minute)})
		var seq uint64
		err := retryStore(func() (err error) { seq, err = store.Append(ctx, events.LeaseSubject(id), req, 0); return err })
		if err != nil {
			return err
		}
		l := events.Fold([]events.Event{req}, []uint64{seq})
		if err := retryStore(func() error { return store.ScheduleExpiry(ctx, id, l.ExpiresAt) }); err != nil {
			return err
		}
		act, _ := l.Activate(now)
		return retryStore(func() error { _, err := store.Append(ctx, events.LeaseSubject(id), act, seq); return err })
	})
	report(b, fmt.Sprintf("events: %d leases appended (2 events and a schedule each)", n), float64(n)/took.Seconds(), "leases/s")
	var counted int
	eventually(b, time.Hour, "the projector has caught up", func() (bool, error) {
		counts, err := store.IndexCounts(ctx)
		counted = 0
		for _, c := range counts {
			counted += c
		}
		return counted >= n, err
	})
	report(b, "events: appended and projected", float64(n)/time.Since(start).Seconds(), "leases/s")
	benchReads(b, "events", admin, fmt.Sprintf("SCALE%07d", 3))
	readMemory(b, "events", bin)
	report(b, "events: restart to ready", restart(b, bin).Seconds()*1000, "ms")
	admin = bin.admin(b)
	benchReads(b, "events, after restart", admin, fmt.Sprintf("SCALE%07d", 3))
	readMemory(b, "events, after restart", bin)
	lc, err := client.New("http://"+bin.addr, loner, priv)
	if err != nil {
		b.Fatal(err)
	}
	own, err := lc.ListLeases(ctx, client.ListLeasesOptions{})
	if err != nil || len(own.Data) != 3 {
		b.Fatalf("the app client's own leases: %d, %v", len(own.Data), err)
	}
	p50, p99 := latencies(b, readSamples, func(int) error { _, err := lc.ListLeases(ctx, client.ListLeasesOptions{}); return err })
	report(b, "events: an app client's own 3 among all, list p50", p50, "ms")
	report(b, "events: an app client's own 3 among all, list p99", p99, "ms")
}

// readSamples is how many times each read is timed: its p99 is then the tenth slowest,
// where with 200 it was the second, which moved by half from one run to the next.
const readSamples = 1000

// benchReads measures the list's three shapes (admin first page, filtered by a target,
// an app client's own), paging through the first thousand, and get.
func benchReads(b *testing.B, phase string, admin *client.Client, recordUID string) {
	ctx := context.Background()
	page, err := admin.ListLeases(ctx, client.ListLeasesOptions{Limit: 100})
	if err != nil || len(page.Data) == 0 {
		b.Fatalf("list: %v", err)
	}
	p50, p99 := latencies(b, readSamples, func(int) error { _, err := admin.ListLeases(ctx, client.ListLeasesOptions{Limit: 100}); return err })
	report(b, phase+": list first page (100), admin p50", p50, "ms")
	report(b, phase+": list first page (100), admin p99", p99, "ms")
	p50, p99 = latencies(b, readSamples, func(int) error {
		_, err := admin.ListLeases(ctx, client.ListLeasesOptions{RecordUID: recordUID, Limit: 100})
		return err
	})
	report(b, phase+": list filtered by record p50", p50, "ms")
	report(b, phase+": list filtered by record p99", p99, "ms")
	ids := make([]string, len(page.Data))
	for i, l := range page.Data {
		ids[i] = l.LeaseID
	}
	p50, p99 = latencies(b, readSamples, func(i int) error { _, err := admin.GetLease(ctx, ids[i%len(ids)]); return err })
	report(b, phase+": get p50", p50, "ms")
	report(b, phase+": get p99", p99, "ms")
	cursor, seen := "", 0
	start := time.Now()
	for seen < 10000 {
		pg, err := admin.ListLeases(ctx, client.ListLeasesOptions{Limit: 1000, Cursor: cursor})
		if err != nil {
			b.Fatal(err)
		}
		seen += len(pg.Data)
		if pg.NextCursor == "" {
			break
		}
		cursor = pg.NextCursor
	}
	report(b, fmt.Sprintf("%s: paging through %d leases, 1000 a page", phase, seen), float64(seen)/time.Since(start).Seconds(), "leases/s")
}

// scaleCgroup is the memory cgroup of -scale.container-memory, when there is one.
var scaleCgroup string

// readContainer reports what the kernel charges the container of -scale.container-memory
// with (the page cache of the store's files included), split into the processes' own
// memory and the page cache, its peak and how often it reached the limit (the kernel
// then reclaims, the page cache first, and kills only when nothing more can be). On
// cgroup v1 the peak and the count are since the last reading (each reading resets
// them), on v2 since the container's making; the kills, since its making.
func readContainer(b *testing.B, phase string) {
	file := func(name string) string {
		data, err := os.ReadFile(filepath.Join(scaleCgroup, name))
		if err != nil {
			return ""
		}
		return string(data)
	}
	fields := func(name string) map[string]float64 {
		m := map[string]float64{}
		for line := range strings.Lines(file(name)) {
			if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
				m[k], _ = strconv.ParseFloat(v, 64)
			}
		}
		return m
	}
	number := func(name string) float64 {
		v, _ := strconv.ParseFloat(strings.TrimSpace(file(name)), 64)
		return v
	}
	// A reading whose file this kernel lacks is left out, not reported as nothing.
	present := func(name string) bool { return file(name) != "" }
	const mib = 1 << 20
	stat := fields("memory.stat")
	if present("memory.usage_in_bytes") { // v1
		report(b, phase+": container memory", number("memory.usage_in_bytes")/mib, "MiB")
		report(b, phase+": container memory, processes'", stat["total_rss"]/mib, "MiB")
		report(b, phase+": container memory, page cache", stat["total_cache"]/mib, "MiB")
		report(b, phase+": container memory peak", number("memory.max_usage_in_bytes")/mib, "MiB since the last reading")
		report(b, phase+": container limit reached", number("memory.failcnt"), "times since the last reading")
		if kills, ok := fields("memory.oom_control")["oom_kill"]; ok { // Linux 4.13 and later
			report(b, phase+": container kills", kills, "times")
		}
		for _, name := range []string{"memory.max_usage_in_bytes", "memory.failcnt"} {
			if err := os.WriteFile(filepath.Join(scaleCgroup, name), []byte("0"), 0o644); err != nil {
				b.Fatalf("reset %s: %v", name, err)
			}
		}
		return
	}
	if !present("memory.current") {
		b.Fatalf("the container %s has neither cgroup v1's nor v2's memory readings", scaleCgroup)
	}
	events := fields("memory.events")
	report(b, phase+": container memory", number("memory.current")/mib, "MiB")
	report(b, phase+": container memory, processes'", stat["anon"]/mib, "MiB")
	report(b, phase+": container memory, page cache", stat["file"]/mib, "MiB")
	if present("memory.peak") { // Linux 5.19 and later
		report(b, phase+": container memory peak", number("memory.peak")/mib, "MiB")
	}
	report(b, phase+": container limit reached", events["max"], "times")
	report(b, phase+": container kills", events["oom_kill"], "times")
}

// scaleNATS is the separate nats-server of -scale.external-nats, when there is one.
var scaleNATS *natsProcess

func readMemory(b *testing.B, phase string, bin *binary) {
	now, peak := rss(bin.cmd.Process.Pid)
	report(b, phase+": server RSS", now, "MiB")
	report(b, phase+": server RSS peak", peak, "MiB")
	// Where the RSS goes: the Go heap NATS and SyVault use, what the collector keeps
	// mapped though free (idle, not yet given back), and the heap size the next
	// collection waits for (the GOGC or GOMEMLIMIT headroom).
	sum := scrapeServer(b, bin)
	mib := func(metric string) float64 {
		v, found := sum(metric + " ")
		if !found {
			b.Fatalf("the server's metrics lack %s", metric)
		}
		return v / (1 << 20)
	}
	report(b, phase+": server heap in use", mib("go_memstats_heap_inuse_bytes"), "MiB")
	report(b, phase+": server heap free, kept", mib("go_memstats_heap_idle_bytes")-mib("go_memstats_heap_released_bytes"), "MiB")
	report(b, phase+": server heap free, given back", mib("go_memstats_heap_released_bytes"), "MiB")
	report(b, phase+": server next collection at", mib("go_memstats_next_gc_bytes"), "MiB")
	report(b, phase+": server stacks", mib("go_memstats_stack_inuse_bytes"), "MiB")
	// On a machine whose processes run under a memory limit, auto sets a soft limit of its
	// own: a run's readings compare with another's only at the same limit (0: none).
	const none = math.MaxInt64 / (1 << 20) // MiB
	if limit := mib("go_gc_gomemlimit_bytes"); limit < none {
		report(b, phase+": server soft memory limit", limit, "MiB")
	} else {
		report(b, phase+": server soft memory limit", 0, "MiB")
	}
	if scaleCgroup != "" {
		readContainer(b, phase)
	}
	report(b, phase+": data directory", dirMiB(bin.dir), "MiB")
	if scaleNATS != nil {
		now, peak := rss(scaleNATS.cmd.Process.Pid)
		report(b, phase+": nats-server RSS", now, "MiB")
		report(b, phase+": nats-server RSS peak", peak, "MiB")
		report(b, phase+": nats-server store", dirMiB(scaleNATS.dir), "MiB")
	}
	if i := slices.Index(bin.args, "--debug-listen"); i >= 0 {
		resp, err := http.Get("http://" + bin.args[i+1] + "/debug/pprof/heap?gc=1")
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		name := filepath.Join(*scaleProfile, strings.NewReplacer(" ", "_", ",", "").Replace(phase)+".heap")
		if err := os.WriteFile(name, data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// cpuProfile records the server's CPU profile for the given seconds from now, when
// profiles are asked for; stop waits for it. A phase's profile should lie within the
// phase: the revocations' at 1,000 and at 100,000 leases are compared.
func cpuProfile(b *testing.B, bin *binary, name string, seconds int) (stop func()) {
	i := slices.Index(bin.args, "--debug-listen")
	if i < 0 {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", bin.args[i+1], seconds), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		_ = os.WriteFile(filepath.Join(*scaleProfile, name+".cpu"), data, 0o644)
	}()
	return func() { <-done }
}

// perfRecord records every CPU's samples, with call graphs, until stop, when -scale.perf
// asks for it; `perf report -i FILE --sort comm,dso,sym` reads them.
func perfRecord(b *testing.B, name string) (stop func()) {
	if *scalePerf == "" {
		return func() {}
	}
	if err := os.MkdirAll(*scalePerf, 0o755); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command("perf", "record", "-a", "-g", "-F", "999", "-q", "-o", filepath.Join(*scalePerf, name+".perf.data"))
	if err := cmd.Start(); err != nil {
		b.Fatalf("perf: %v", err)
	}
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}
}

// storeAndServerCPU is the CPU time of the server and of its NATS: the same process when
// NATS is embedded, two with -scale.external-nats, so the two modes' costs compare.
func storeAndServerCPU(bin *binary) float64 {
	t := cpuSeconds(bin.cmd.Process.Pid)
	if scaleNATS != nil {
		t += cpuSeconds(scaleNATS.cmd.Process.Pid)
	}
	return t
}

// costs is what a phase is charged with, read before and after it (see costsNow).
type costs struct {
	server, db, dbBackground float64 // CPU seconds (server includes an external NATS)
	gc                       float64 // the server's garbage collector's CPU seconds
	batches, batchSeconds    float64 // PostgreSQL drop batches the workers ran, and their time
	mariadb                  float64 // the local MariaDB's CPU seconds
}

// scrapeServer reads the server's metrics once; the function it returns adds the values of
// the lines that start with prefix (a name, or a name and the start of its labels).
func scrapeServer(b testing.TB, bin *binary) (sum func(prefix string) (total float64, found bool)) {
	b.Helper()
	resp, err := http.Get("http://" + bin.addr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return func(prefix string) (total float64, found bool) {
		for line := range strings.Lines(string(data)) {
			if strings.HasPrefix(line, prefix) {
				f, err := strconv.ParseFloat(strings.TrimSpace(line[strings.LastIndexByte(line, ' ')+1:]), 64)
				if err != nil {
					b.Fatalf("metric line %q: %v", line, err)
				}
				total, found = total+f, true
			}
		}
		return total, found
	}
}

// costsNow reads the counters, the server's from one scrape of its metrics. With the
// embedded NATS, the collector's CPU includes marking NATS's per-subject state, part of
// what a phase's server CPU grows by; the drop batches are what a revoke phase waits on
// in the database.
func costsNow(b *testing.B, bin *binary, postmaster int) costs {
	sum := scrapeServer(b, bin)
	c := costs{server: storeAndServerCPU(bin)}
	c.db, c.dbBackground = postgresCPU(postmaster)
	c.mariadb = mariadbCPU()
	var found bool
	if c.gc, found = sum("go_cpu_classes_gc_total_cpu_seconds_total "); !found {
		b.Fatal("the server's metrics lack go_cpu_classes_gc_total_cpu_seconds_total")
	}
	// Absent until the first batch.
	const batch = `syvault_database_operation_seconds_%s{engine="postgresql",op="drop_users",outcome="ok"}`
	c.batches, _ = sum(fmt.Sprintf(batch, "count"))
	c.batchSeconds, _ = sum(fmt.Sprintf(batch, "sum"))
	return c
}

func (c costs) minus(o costs) costs {
	return costs{server: c.server - o.server, db: c.db - o.db, dbBackground: c.dbBackground - o.dbBackground,
		gc: c.gc - o.gc, batches: c.batches - o.batches, batchSeconds: c.batchSeconds - o.batchSeconds, mariadb: c.mariadb - o.mariadb}
}

// cpuSeconds is the CPU time pid and its children (waited for or not) have used: for
// the PostgreSQL postmaster, its backends' too.
func cpuSeconds(pid int) float64 {
	var total float64
	tasks, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range tasks {
		st, ok := stat(atoiOr(filepath.Base(filepath.Dir(p))))
		if !ok || (st.ppid != pid && atoiOr(filepath.Base(filepath.Dir(p))) != pid) {
			continue
		}
		total += st.cpu
	}
	return total
}

// postgresCPU is cpuSeconds(postmaster), and the part of it its background processes used
// (the checkpointer, the writers; autovacuum when it is on): work a phase is charged with
// that its own statements did not ask for, such as writing out what an earlier phase
// dirtied.
func postgresCPU(postmaster int) (all, background float64) {
	all = cpuSeconds(postmaster)
	tasks, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range tasks {
		st, ok := stat(atoiOr(filepath.Base(filepath.Dir(p))))
		if !ok || st.ppid != postmaster {
			continue
		}
		cmd, _ := os.ReadFile(p)
		for _, bg := range []string{"checkpointer", "background writer", "walwriter", "autovacuum", "archiver", "logical replication"} {
			if strings.Contains(string(cmd), bg) {
				background += st.cpu
				break
			}
		}
	}
	return all, background
}

// mariadbCPU is the CPU time of the local MariaDB server (0 when none runs).
func mariadbCPU() float64 {
	comms, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, p := range comms {
		if name, _ := os.ReadFile(p); strings.TrimSpace(string(name)) == "mariadbd" {
			st, _ := stat(atoiOr(filepath.Base(filepath.Dir(p))))
			return st.cpu
		}
	}
	return 0
}

func atoiOr(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// postmaster is the pid of the local PostgreSQL's postmaster.
func postmaster(b *testing.B) int {
	b.Helper()
	var pid int
	var dir string
	pg, err := pgx.Connect(context.Background(), "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	if err != nil {
		b.Fatal(err)
	}
	defer pg.Close(context.Background())
	if err := pg.QueryRow(context.Background(), "SELECT current_setting('data_directory')").Scan(&dir); err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		b.Fatal(err)
	}
	pid, _ = strconv.Atoi(strings.SplitN(string(data), "\n", 2)[0])
	return pid
}

// benchDatabases creates n leases through the API (nine in ten on PostgreSQL, with a
// CREATEROLE admin as the issue of role memberships needs, one in ten on MariaDB), and
// measures creates, revokes and reads as the count grows, then an expiry storm.
func benchDatabases(b *testing.B, n, storm int) {
	ctx := context.Background()
	pg, err := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	requireDB(b, "PostgreSQL on 127.0.0.1:5432", err)
	defer pg.Close(ctx)
	my, err := sql.Open("mysql", "root@tcp(127.0.0.1:3306)/")
	if err == nil {
		err = my.Ping()
	}
	requireDB(b, "MariaDB on 127.0.0.1:3306", err)
	defer my.Close()
	db := "syvault_scale_" + strconv.Itoa(int(time.Now().Unix()%1e6))
	adminRole := "vf_scale_admin"
	for _, stmt := range []string{
		"DROP ROLE IF EXISTS " + adminRole,
		"CREATE ROLE " + adminRole + " LOGIN CREATEROLE PASSWORD 'scale'",
		"GRANT pg_signal_backend TO " + adminRole,
		"CREATE DATABASE " + db + " OWNER " + adminRole,
	} {
		if _, err := pg.Exec(ctx, stmt); err != nil {
			b.Fatalf("%s: %v", stmt, err)
		}
	}
	var group string
	myAdmin := "vf_scale_my_" + strconv.Itoa(int(time.Now().Unix()%1e6))
	b.Cleanup(func() { cleanupScale(b, db, adminRole, group, myAdmin) })
	for _, stmt := range []string{"CREATE DATABASE " + db, "CREATE TABLE " + db + ".t (id int)",
		"CREATE USER '" + myAdmin + "'@'%' IDENTIFIED BY 'scale'", "GRANT ALL PRIVILEGES ON *.* TO '" + myAdmin + "'@'%' WITH GRANT OPTION"} {
		if _, err := my.Exec(stmt); err != nil {
			b.Fatalf("%s: %v", stmt, err)
		}
	}
	args := []string{"--request-timeout", "60s"}
	if *scaleExternal {
		scaleNATS = startNATS(b)
		args = append(args, "--nats-url", scaleNATS.url)
	}
	bin := scaleBinary(b, args...)
	admin := bin.admin(b)
	pgT, err := admin.CreateTarget(ctx, client.Target{Name: "scale-pg", Engine: "postgresql", Host: "127.0.0.1", Port: 5432, Database: db,
		AdminUsername: adminRole, AdminPassword: "scale", TLSMode: "disable",
		Grants: []client.Grant{{Database: db, Schema: "public", Privileges: []string{"SELECT"}}}})
	if err != nil {
		b.Fatal(err)
	}
	group = "syvault_" + pgT.RecordUID
	myT, err := admin.CreateTarget(ctx, client.Target{Name: "scale-mysql", Engine: "mysql", Host: "127.0.0.1", Port: 3306, Database: db,
		AdminUsername: myAdmin, AdminPassword: "scale", TLSMode: "disable",
		Grants: []client.Grant{{Database: db, Privileges: []string{"SELECT"}}}})
	if err != nil {
		b.Fatal(err)
	}
	// The leases made and not revoked, with their engine: a revoke round takes
	// PostgreSQL's alone. (Completion order is not request order, so a position in the
	// list does not tell the engine; taking every tenth as MariaDB's put a tenth of
	// MariaDB drops, whose cost grows with its accounts, into the PostgreSQL rounds.)
	type made struct {
		id    string
		mysql bool
	}
	var active []made
	var mu sync.Mutex
	pm := postmaster(b)
	// grow makes leases up to to active, one in ten MariaDB's; refill makes the
	// PostgreSQL leases a revoke round took, so the mix stays the same.
	grow := func(to int, refill bool) {
		from := len(active)
		before := costsNow(b, bin, pm)
		took := parallelDo(b, 8, to-from, func(i int) error {
			uid, mysql := pgT.RecordUID, !refill && (from+i)%10 == 9
			if mysql {
				uid = myT.RecordUID
			}
			l, err := admin.CreateLease(ctx, uid, 86400)
			if err != nil {
				return err
			}
			mu.Lock()
			active = append(active, made{l.LeaseID, mysql})
			mu.Unlock()
			return nil
		})
		if refill {
			report(b, fmt.Sprintf("databases: PostgreSQL creates, c8, refilling %d to %d active", from, to), float64(to-from)/took.Seconds(), "creates/s")
			return
		}
		c := costsNow(b, bin, pm).minus(before)
		report(b, fmt.Sprintf("databases: creates, c8, %d to %d active", from, to), float64(to-from)/took.Seconds(), "creates/s")
		// CPU per create, unlike the rate, does not move with what else the machine runs.
		report(b, fmt.Sprintf("databases: creates %d to %d, server CPU per create", from, to), c.server*1000/float64(to-from), "ms")
		report(b, fmt.Sprintf("databases: creates %d to %d, PostgreSQL CPU per create (9 in 10 are PostgreSQL)", from, to), c.db*1000/float64(to-from), "ms")
		report(b, fmt.Sprintf("databases: creates %d to %d, server's collector CPU per create", from, to), c.gc*1000/float64(to-from), "ms")
	}
	revokes := func(at, round int) (rate float64) {
		// The last thousand PostgreSQL leases made, revoked at c8, then made again.
		var victims []string
		for i := len(active) - 1; i >= 0 && len(victims) < 1000; i-- {
			if !active[i].mysql {
				victims = append(victims, active[i].id)
			}
		}
		// 1,000 revocations take 3 s or more on this machine.
		stopProfile := cpuProfile(b, bin, fmt.Sprintf("revokes_at_%d_round_%d", at, round), 2)
		stopPerf := perfRecord(b, fmt.Sprintf("revokes_at_%d_round_%d", at, round))
		before := costsNow(b, bin, pm)
		took := parallelDo(b, 8, len(victims), func(i int) error { return admin.RevokeLease(ctx, victims[i]) })
		c := costsNow(b, bin, pm).minus(before)
		stopPerf()
		stopProfile()
		n := float64(len(victims))
		rate = n / took.Seconds()
		phase := fmt.Sprintf("databases: PostgreSQL revokes at %d active, round %d", at, round+1)
		report(b, phase+", c8", rate, "revokes/s")
		report(b, phase+", server CPU per revoke", c.server*1000/n, "ms")
		report(b, phase+", PostgreSQL CPU per revoke", c.db*1000/n, "ms")
		report(b, phase+", of it PostgreSQL's background processes", c.dbBackground*1000/n, "ms")
		report(b, phase+", MariaDB CPU per revoke (none of its users is revoked)", c.mariadb*1000/n, "ms")
		report(b, phase+", server's collector CPU per revoke", c.gc*1000/n, "ms")
		report(b, phase+", users per drop batch", n/max(c.batches, 1), "users")
		report(b, phase+", time per drop batch", c.batchSeconds*1000/max(c.batches, 1), "ms")
		active = slices.DeleteFunc(active, func(m made) bool { return slices.Contains(victims, m.id) })
		if round > 0 {
			return rate
		}
		p50, p99 := latencies(b, 200, func(int) error {
			l, err := admin.CreateLease(ctx, pgT.RecordUID, 86400)
			if err == nil {
				err = admin.RevokeLease(ctx, l.LeaseID)
			}
			return err
		})
		report(b, fmt.Sprintf("databases: PostgreSQL create+revoke, c1, at %d active, p50", at), p50, "ms")
		report(b, fmt.Sprintf("databases: PostgreSQL create+revoke, c1, at %d active, p99", at), p99, "ms")
		return rate
	}
	// Revocations are timed in rounds at each size (each followed by making the revoked
	// leases again), since one round's rate moved by a fifth from one run to the next;
	// the ratio compares the medians.
	const revokeRounds = 3
	medianRevokes := func(at int) float64 {
		rates := make([]float64, revokeRounds)
		for r := range rates {
			rates[r] = revokes(at, r)
			grow(at, true)
		}
		slices.Sort(rates)
		report(b, fmt.Sprintf("databases: PostgreSQL revokes, c8, at %d active, median of %d rounds", at, revokeRounds), rates[len(rates)/2], "revokes/s")
		return rates[len(rates)/2]
	}
	if n > 0 {
		small := min(1000, n)
		grow(small, false)
		atSmall := medianRevokes(small)
		for size := 10000; size < n; size *= 2 {
			grow(size, false)
		}
		grow(n, false)
		atN := medianRevokes(n)
		report(b, fmt.Sprintf("databases: PostgreSQL revokes at %d active against at %d (medians)", n, small), 100*atN/atSmall, "%")
		var members int
		_ = pg.QueryRow(ctx, "SELECT count(*) FROM pg_auth_members WHERE member = $1::regrole", adminRole).Scan(&members)
		report(b, fmt.Sprintf("databases: the PostgreSQL admin's role memberships at %d active", n), float64(members), "roles")
		benchReads(b, fmt.Sprintf("databases, %d active", n), admin, myT.RecordUID)
		readMemory(b, fmt.Sprintf("databases, %d active", n), bin)
		report(b, fmt.Sprintf("databases: restart to ready at %d active", n), restart(b, bin).Seconds()*1000, "ms")
		admin = bin.admin(b)
	}
	if storm > 0 {
		benchStorm(b, bin, admin, pgT.RecordUID, storm)
	}
}

// benchStorm creates n leases whose expiries fall within one minute and reports how long
// after its expires_at each user was dropped (the lease.dropped event's time).
func benchStorm(b *testing.B, bin *binary, admin *client.Client, recordUID string, n int) {
	ctx := context.Background()
	since := time.Now()
	// Every lease expires within one minute, whatever creating them takes: the window
	// opens once creating all n at 50 a second (well under this machine's rate) would have
	// ended, and each lease takes the TTL that lands it on its second of the window.
	window := since.Add(time.Duration(max(120, n/50)) * time.Second)
	expires := map[string]time.Time{}
	var mu sync.Mutex
	var late atomic.Int64
	parallelDo(b, 8, n, func(i int) error {
		ttl := int(math.Ceil(time.Until(window.Add(time.Duration(i%60) * time.Second)).Seconds()))
		if ttl < 1 {
			late.Add(1)
			ttl = 1
		}
		l, err := admin.CreateLease(ctx, recordUID, ttl)
		if err == nil {
			mu.Lock()
			expires[l.LeaseID] = l.ExpiresAt
			mu.Unlock()
		}
		return err
	})
	if late.Load() > 0 {
		b.Logf("%d storm leases were created after their second of the window: the storm is spread wider than a minute", late.Load())
	}
	first, last := window.Add(time.Hour), time.Time{}
	for _, exp := range expires {
		first, last = minTime(first, exp), maxTime(last, exp)
	}
	report(b, fmt.Sprintf("storm: %d leases, expiries spread over", n), last.Sub(first).Seconds(), "s")
	var lags []time.Duration
	var early int
	stopProfile := cpuProfile(b, bin, "storm", 30)
	pm := postmaster(b)
	before := costsNow(b, bin, pm)
	defer func() {
		c := costsNow(b, bin, pm).minus(before)
		stopProfile()
		report(b, fmt.Sprintf("storm: %d leases, server CPU per lease (expiry and drop)", n), c.server*1000/float64(n), "ms")
		report(b, fmt.Sprintf("storm: %d leases, PostgreSQL CPU per lease (expiry and drop)", n), c.db*1000/float64(n), "ms")
	}()
	// Read the audit trail as it grows, each event once: a poll that re-read it all would
	// load the server it measures.
	cursor, seen := "", map[string]bool{}
	eventually(b, time.Until(window)+660*time.Second, "every storm lease dropped", func() (bool, error) {
		for {
			page, err := admin.Audit(ctx, client.AuditOptions{Since: since, Cursor: cursor, Limit: 1000})
			if err != nil {
				return false, err
			}
			for _, e := range page.Data {
				if exp, ok := expires[e.LeaseID]; ok && e.Type == string(events.LeaseDropped) && !seen[e.LeaseID] {
					seen[e.LeaseID] = true
					if e.Time.Before(exp) {
						early++
					}
					lags = append(lags, e.Time.Sub(exp))
				}
			}
			// The last page is read again next time, from its start: seen keeps its
			// drops from counting twice.
			if page.NextCursor == "" || len(page.Data) == 0 {
				break
			}
			cursor = page.NextCursor
		}
		return len(lags) == n, nil
	})
	report(b, fmt.Sprintf("storm: %d leases expiring within a minute, drop lag p50", n), pct(lags, 50), "ms")
	report(b, fmt.Sprintf("storm: %d leases, drop lag p99", n), pct(lags, 99), "ms")
	report(b, fmt.Sprintf("storm: %d leases, dropped before expires_at", n), float64(early), "leases")
}

// cleanupScale drops what the benchmark made in the shared databases: its lease users
// (members of its target's group; MariaDB users granted on its database), the group, the
// database, the admin, and on MariaDB the target's marker role.
func cleanupScale(b *testing.B, db, adminRole, group, myAdmin string) {
	ctx := context.Background()
	pg, err := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	if err != nil {
		b.Logf("cleanup: %v", err)
		return
	}
	defer pg.Close(ctx)
	_, _ = pg.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
	if group != "" {
		// A few thousand a transaction: a DROP ROLE holds its locks to the end of it, and
		// a hundred thousand would overflow the lock table (each failing drop would then
		// be skipped, and the group's removal would leave the rest behind unseen).
		for {
			tag, err := pg.Exec(ctx, `DO $$ DECLARE r record; BEGIN
				FOR r IN SELECT u.rolname FROM pg_auth_members m JOIN pg_roles u ON u.oid = m.member JOIN pg_roles g ON g.oid = m.roleid
					WHERE g.rolname = '`+group+`' AND u.rolname LIKE 'vf\_tmp\_%' LIMIT 2000 LOOP
					EXECUTE format('DROP ROLE %I', r.rolname);
				END LOOP; END $$`)
			var left int
			if err == nil {
				err = pg.QueryRow(ctx, `SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
					WHERE g.rolname = $1`, group).Scan(&left)
			}
			if err != nil || left <= 1 { // the admin's own membership stays
				if err != nil {
					b.Logf("cleanup: %v (%s)", err, tag)
				}
				break
			}
		}
		_, _ = pg.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{group}.Sanitize())
	}
	_, _ = pg.Exec(ctx, "DROP ROLE IF EXISTS "+adminRole)
	my, err := sql.Open("mysql", "root@tcp(127.0.0.1:3306)/")
	if err != nil {
		return
	}
	defer my.Close()
	// Grants name the database as a pattern, its underscores escaped.
	rows, err := my.Query("SELECT DISTINCT user FROM mysql.db WHERE db IN (?, ?)", db, strings.ReplaceAll(db, "_", `\_`))
	if err == nil {
		var users []string
		for rows.Next() {
			var u string
			if rows.Scan(&u) == nil && strings.HasPrefix(u, "vf_tmp_") {
				users = append(users, u)
			}
		}
		rows.Close()
		for _, u := range users {
			_, _ = my.Exec("DROP USER IF EXISTS '" + u + "'@'%'")
		}
	}
	_, _ = my.Exec("DROP DATABASE IF EXISTS " + db)
	drivertest.DropMarkerRoles(my, myAdmin)
	_, _ = my.Exec("DROP USER IF EXISTS '" + myAdmin + "'@'%'")
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// retryStore retries fn while the event store answers that it is busy or unreachable, as
// the API's callers do: 32 appenders on two shared cores can outwait an append's timeout.
// Appends carry their dedupe id, so a retry of one that landed is recognised, not doubled.
func retryStore(fn func() error) error {
	var err error
	for range 5 {
		if err = fn(); err == nil || !slices.Contains([]events.Code{events.ETimeout, events.EUnavailable}, events.ErrorCode(err)) {
			return err
		}
	}
	return err
}
