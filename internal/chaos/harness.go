package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/internal/pgtest"
	"github.com/syvault/syvault/internal/tcpproxy"
)

// Config sizes a run. The zero value of a field takes the default named beside it.
type Config struct {
	Seed        uint64        // 0: a random seed, printed
	Duration    time.Duration // of the load and the faults; default 2m
	Rate        float64       // lease operations a second, all clients together; default 15
	Concurrency int           // clients sending them; default 8
	FaultEvery  time.Duration // mean time between faults; default 10s
	Settle      time.Duration // the longest the run waits for everything to settle; default 3m
	// TargetEvery is the mean time between targets registered and removed under the
	// faults (targets.go); default 5s, negative for none.
	TargetEvery time.Duration
	// Processes: API-only and worker-only SyVault processes; default 2 and 2.
	APIs, Workers int
	// RequestTimeout and AckWait are the SyVault processes' --request-timeout and
	// --ack-wait; default 10s and 15s (short, so a run's redeliveries happen within it).
	RequestTimeout, AckWait time.Duration
	Dir                     string    // where the temporary directory goes; default os.TempDir()
	PGBin                   string    // PostgreSQL's server binaries; default pgtest.DefaultBin
	KeepDir                 bool      // keep the logs and stores after the run
	Out                     io.Writer // the progress lines and the report; default os.Stdout
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Duration, 2*time.Minute)
	def(&c.FaultEvery, 10*time.Second)
	def(&c.Settle, 3*time.Minute)
	def(&c.RequestTimeout, 10*time.Second)
	def(&c.AckWait, 15*time.Second)
	def(&c.TargetEvery, 5*time.Second)
	if c.Rate <= 0 {
		c.Rate = 15
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.APIs <= 0 {
		c.APIs = 2
	}
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.PGBin == "" {
		c.PGBin = pgtest.DefaultBin
	}
}

// Harness holds everything a run started. Close stops all of it.
type Harness struct {
	cfg   Config
	dir   string
	start time.Time

	mu    sync.Mutex
	procs []*proc

	nats []*natsNode
	nc   *nats.Conn
	js   jetstream.JetStream

	pg, my  *database
	pgSuper string

	syvaultBin string
	masterKey  string // file path
	apis       []*svProc
	workers    []*svProc
	clients    []*client.Client  // one per API process, same admin client
	targets    map[string]string // engine → record uid
	exits      map[string]int    // unplanned exits of SyVault processes, by last log line
}

// svProc is one SyVault process.
type svProc struct {
	*proc
	addr string
	role string // api or workers
	// held is set while a fault keeps the process down; a process that is not running
	// and not held exited on its own, and the supervisor starts it again.
	held atomic.Bool
}

// supervise restarts, until ctx ends, any SyVault process that exited on its own, as
// Kubernetes or systemd would, and counts those exits (the report names them: a process
// should not exit by itself, but it is not an invariant of the run).
func (h *Harness) supervise(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, p := range h.all() {
			if p.held.Load() || p.running() {
				continue
			}
			h.mu.Lock()
			h.exits[p.name+": "+lastLine(p.logPath)]++
			h.mu.Unlock()
			h.logf("%s exited on its own (%s); starting it again", p.name, lastLine(p.logPath))
			if err := p.start(); err != nil {
				h.logf("restart %s: %v", p.name, err)
			}
		}
	}
}

// lastLine returns the last non-empty line of a log file.
func lastLine(path string) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return lines[len(lines)-1]
}

func (h *Harness) track(p *proc) {
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
}

func (h *Harness) logf(format string, args ...any) {
	fmt.Fprintf(h.cfg.Out, "%7.1fs  %s\n", time.Since(h.start).Seconds(), fmt.Sprintf(format, args...))
}

// Close kills every process the run started and removes its directory (unless KeepDir).
// It is safe to call more than once and after a failed setup.
func (h *Harness) Close() {
	h.mu.Lock()
	procs := h.procs
	h.procs = nil
	h.mu.Unlock()
	for _, p := range procs {
		sig := syscall.SIGTERM
		if p.name == "postgresql" {
			sig = syscall.SIGQUIT // immediate shutdown: nothing of a throwaway cluster needs saving
		}
		_ = p.stop(sig, 15*time.Second)
	}
	for _, d := range []*database{h.pg, h.my} {
		if d != nil && d.proxy != nil {
			d.proxy.Close()
		}
		if d != nil && d.close != nil {
			d.close()
		}
	}
	if h.nc != nil {
		h.nc.Close()
	}
	if h.dir != "" && !h.cfg.KeepDir {
		_ = os.RemoveAll(h.dir)
	}
}

// setup builds the binaries and starts the cluster, the databases, their proxies and the
// SyVault processes, and registers one target on each database.
func (h *Harness) setup(ctx context.Context) error {
	var err error
	base := h.cfg.Dir
	if base == "" {
		base = os.TempDir()
	}
	if h.dir, err = os.MkdirTemp(base, "syvault-chaos-"); err != nil {
		return err
	}
	// The database servers run as their own OS users: they must be able to reach their
	// directories inside this one, and to nothing else in it.
	if err := os.Chmod(h.dir, 0o711); err != nil {
		return err
	}
	h.logf("run directory %s", h.dir)
	// Databases first: a missing one is reported before the slow builds.
	if h.pg, err = h.startPostgres(ctx); err != nil {
		return fmt.Errorf("postgresql: %w", err)
	}
	if h.my, err = h.startMariaDB(ctx); err != nil {
		return fmt.Errorf("mariadb: %w", err)
	}
	for _, d := range []*database{h.pg, h.my} {
		if d.proxy, err = tcpproxy.Start("127.0.0.1:" + strconv.Itoa(d.port)); err != nil {
			return err
		}
	}
	h.logf("postgresql on :%d (proxy :%d), mariadb on :%d (proxy :%d)", h.pg.port, h.pg.proxy.Port(), h.my.port, h.my.proxy.Port())

	// The builds run in the module, wherever the run was started from inside it.
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return fmt.Errorf("run the chaos run inside the SyVault repository (go env GOMOD: %v)", err)
	}
	bin := filepath.Join(h.dir, "bin")
	natsBin, syBin := filepath.Join(bin, "nats-server"), filepath.Join(bin, "syvault")
	for _, b := range [][2]string{{natsBin, "github.com/nats-io/nats-server/v2"}, {syBin, "github.com/syvault/syvault/cmd/syvault"}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b[0], b[1])
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", b[1], err, out)
		}
	}
	h.syvaultBin = syBin
	h.logf("built nats-server and syvault")
	if err := h.startNATS(ctx, natsBin); err != nil {
		return err
	}
	h.logf("NATS cluster up: %s", h.natsURLs())
	return h.startSyVault(ctx)
}

// startSyVault makes the master key and the admin client with `syvault init`, starts the
// API and worker processes and registers the targets.
func (h *Harness) startSyVault(ctx context.Context) error {
	initDir := filepath.Join(h.dir, "init")
	ports, err := freePorts(h.cfg.APIs + h.cfg.Workers)
	if err != nil {
		return err
	}
	firstAPI := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	cmd := exec.CommandContext(ctx, h.syvaultBin, "init", "--data-dir", initDir, "--nats-url", h.natsURLs(), "--replicas", "3", "--public-url", firstAPI)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("syvault init: %w\n%s", err, out)
	}
	h.masterKey = filepath.Join(initDir, "master.key")
	for i := range h.cfg.APIs + h.cfg.Workers {
		role, n := "api", i+1
		if i >= h.cfg.APIs {
			role, n = "workers", i-h.cfg.APIs+1
		}
		name := fmt.Sprintf("syvault-%s-%d", role, n)
		addr := fmt.Sprintf("127.0.0.1:%d", ports[i])
		p := &svProc{addr: addr, role: role, proc: &proc{name: name, logPath: filepath.Join(h.dir, name+".log"),
			argv: []string{h.syvaultBin, "serve", "--components", role, "--nats-url", h.natsURLs(), "--replicas", "3",
				"--master-key-file", h.masterKey, "--data-dir", filepath.Join(h.dir, name), "--listen", addr,
				"--request-timeout", h.cfg.RequestTimeout.String(), "--ack-wait", h.cfg.AckWait.String()}}}
		h.track(p.proc)
		if role == "api" {
			h.apis = append(h.apis, p)
		} else {
			h.workers = append(h.workers, p)
		}
	}
	// One at a time: the first creates the streams and buckets the others then find.
	for _, p := range h.all() {
		if err := p.start(); err != nil {
			return err
		}
		if err := poll(ctx, 60*time.Second, p.name+" to serve /healthz", func() error { return probe(ctx, p.addr, "/healthz") }); err != nil {
			return err
		}
	}
	if err := poll(ctx, 60*time.Second, "the API to be ready (workers seen)", func() error { return probe(ctx, h.apis[0].addr, "/readyz") }); err != nil {
		return err
	}
	var ac struct {
		ClientID   string `json:"client_id"`
		PrivateKey string `json:"private_key"`
	}
	data, err := os.ReadFile(filepath.Join(initDir, "admin-client.json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, &ac); err != nil {
		return fmt.Errorf("admin-client.json: %w", err)
	}
	for _, p := range h.apis {
		c, err := client.New("http://"+p.addr, ac.ClientID, ac.PrivateKey)
		if err != nil {
			return err
		}
		h.clients = append(h.clients, c)
	}
	h.logf("syvault: %d API and %d worker processes, --replicas 3", len(h.apis), len(h.workers))
	h.targets = map[string]string{}
	for _, d := range []*database{h.pg, h.my} {
		got, err := h.clients[0].CreateTarget(ctx, d.target("chaos-"+d.engine))
		if err != nil {
			return fmt.Errorf("register the %s target: %w", d.engine, err)
		}
		h.targets[d.engine] = got.RecordUID
	}
	h.logf("targets registered: %v", h.targets)
	return nil
}

// target is a target named name on d, reached through its proxy, with the grants every
// lease of the run gets.
func (d *database) target(name string) client.Target {
	t := client.Target{Name: name, Engine: d.engine, Host: "127.0.0.1", Port: d.proxy.Port(), Database: "myapp",
		AdminUsername: adminName, AdminPassword: d.adminPW, TLSMode: "disable",
		Grants: []client.Grant{{Database: "myapp", Privileges: []string{"SELECT", "INSERT"}}}}
	if d.engine == "postgresql" {
		t.Grants[0].Schema = "public"
	}
	return t
}

func (h *Harness) all() []*svProc { return append(append([]*svProc{}, h.apis...), h.workers...) }

func (h *Harness) db(engine string) *database {
	if engine == "postgresql" {
		return h.pg
	}
	return h.my
}

// probe GETs path on addr and wants 200.
func probe(ctx context.Context, addr, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s%s: %d", addr, path, resp.StatusCode)
	}
	return nil
}
