package chaos

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one external process of the run: started in a process group of its own (so a
// signal reaches the server and every child it forked, as PostgreSQL's backends are) and
// with a parent-death signal (so it dies with the harness even if Close never runs). Its
// output goes, appended across restarts, to one log file, which the run scans for panics.
type proc struct {
	name    string
	argv    []string
	logPath string
	cred    *syscall.Credential // run as another OS user (postgres, mysql) when root

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	starts int
}

// start runs the process; it fails if it is running already.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s: already running", p.name)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if p.cred != nil {
		// The server opens its log itself only through this descriptor; chown keeps the
		// file readable by the harness and writable by the server's user.
		_ = os.Chown(p.logPath, int(p.cred.Uid), int(p.cred.Gid))
	}
	fmt.Fprintf(logf, "=== chaos: start #%d of %s at %s\n", p.starts+1, p.name, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: p.cred}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("%s: %w", p.name, err)
	}
	p.starts++
	p.cmd, p.done = cmd, make(chan struct{})
	done := p.done
	go func() {
		_ = cmd.Wait()
		logf.Close()
		p.mu.Lock()
		if p.cmd == cmd {
			p.cmd = nil
		}
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// running reports whether the process is alive (as far as its parent knows).
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// signal sends sig to the process's whole group; false when it is not running.
func (p *proc) signal(sig syscall.Signal) bool {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil {
		return false
	}
	return syscall.Kill(-cmd.Process.Pid, sig) == nil
}

// kill sends SIGKILL to the group and waits (up to d) for the process to be reaped.
func (p *proc) kill(d time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT) // a stopped group dies as well, but let it be reaped
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	return waitDone(done, d, p.name)
}

// stop asks the process to end with sig and waits up to d, then kills its group.
func (p *proc) stop(sig syscall.Signal, d time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT)
	_ = cmd.Process.Signal(sig)
	if waitDone(done, d, p.name) == nil {
		// Children the server left (none should outlive a clean stop) go with the group.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return nil
	}
	return p.kill(10 * time.Second)
}

func waitDone(done chan struct{}, d time.Duration, name string) error {
	select {
	case <-done:
		return nil
	case <-time.After(d):
		return fmt.Errorf("%s: still running %s after the signal", name, d)
	}
}

// panicked returns the lines of the process's log that show a Go panic, a fatal runtime
// error or a data race.
func (p *proc) panicked() ([]string, error) {
	data, err := os.ReadFile(p.logPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return panicLines(string(data)), nil
}

// panicLines returns the lines of a Go program's output that show a panic, a fatal
// runtime error or a data race.
func panicLines(log string) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if strings.HasPrefix(line, "panic:") || strings.HasPrefix(line, "fatal error:") || strings.HasPrefix(line, "WARNING: DATA RACE") {
			out = append(out, line)
		}
	}
	return out
}
