package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/syvault/syvault/http/client"
)

// How sy agent tells the application about new credentials: the --exec child, or the
// process a --pid-file names.

const (
	// childStopTimeout is how long a child has to exit after the stop signal before it is
	// killed, when sy agent restarts it.
	childStopTimeout = 30 * time.Second
	// childOutputDelay bounds the wait for a child's output after it exited: a process it
	// started and left running may hold its stdout open.
	childOutputDelay = 2 * time.Second
)

// parseSignal reads a signal name: HUP, SIGHUP or hup.
func parseSignal(name string) (os.Signal, error) {
	key := strings.TrimPrefix(strings.ToUpper(name), "SIG")
	if s, ok := signalsByName[key]; ok {
		return s, nil
	}
	names := make([]string, 0, len(signalsByName))
	for n := range signalsByName {
		names = append(names, "SIG"+n)
	}
	sort.Strings(names)
	return nil, fmt.Errorf("--signal %q is not one of %s", name, strings.Join(names, ", "))
}

// signalName names sig as --signal does (SIGTERM), or as Go does one it does not list.
func signalName(sig os.Signal) string {
	for name, s := range signalsByName {
		if s == sig {
			return "SIG" + name
		}
	}
	return sig.String()
}

// child is the application of --exec: a process started with a lease's credentials in
// its environment. Its methods are called from one goroutine.
type child struct {
	argv           []string
	stdin          io.Reader
	stdout, stderr io.Writer

	cmd  *exec.Cmd
	done chan struct{} // closed once cmd has exited; cmd.ProcessState then says how
}

// start starts the application with l's credentials in its environment.
func (c *child) start(l *client.Lease) error {
	cmd := exec.Command(c.argv[0], c.argv[1:]...)
	cmd.Env = childEnv(os.Environ(), l)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.stdin, c.stdout, c.stderr
	cmd.WaitDelay = childOutputDelay
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the application: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // its outcome is in cmd.ProcessState
		close(done)
	}()
	c.cmd, c.done = cmd, done
	return nil
}

// childEnv is the environment the application gets: sy agent's own, without its private
// key or the names of the files that hold it, which the application has no use for, and
// the lease's SY_* variables.
func childEnv(environ []string, l *client.Lease) []string {
	env := make([]string, 0, len(environ)+5)
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if name != EnvPrivateKey && name != EnvPrivateKeyFile && name != EnvCredentialsFile {
			env = append(env, kv)
		}
	}
	pairs := leaseEnv(l)
	for i := 0; i+1 < len(pairs); i += 2 {
		env = append(env, pairs[i]+"="+pairs[i+1])
	}
	return env
}

// exited is closed when the running application exits (nil before it started).
func (c *child) exited() <-chan struct{} { return c.done }

func (c *child) pid() int { return c.cmd.Process.Pid }

// status describes how the application exited, and the exit status sy agent passes on.
func (c *child) status() (string, int) {
	ps := c.cmd.ProcessState
	code := ps.ExitCode()
	if code < 0 { // killed by a signal
		code = ExitError
	}
	return ps.String(), code
}

// signal sends sig to the application; one that has exited already is not an error.
func (c *child) signal(sig os.Signal) error {
	if err := c.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// stop sends sig and waits for the application to exit, killing it if it has not
// within timeout.
func (c *child) stop(sig os.Signal, timeout time.Duration) {
	_ = c.signal(sig)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// checkPIDFile fails when the pid file exists and is not to be trusted (pidFileTrusted),
// so that this is known when the agent starts, not at its first rotation.
func checkPIDFile(path string) error {
	f, err := openTrustedPIDFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // the application may write it later
	} else if err != nil {
		return err
	}
	return f.Close()
}

// openTrustedPIDFile opens the pid file, never through a symlink, and checks that only
// this user may have set it (pidFileTrusted).
func openTrustedPIDFile(path string) (*os.File, error) {
	f, err := openPIDFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the pid file: %w", pathErrCause(err))
	}
	fi, err := f.Stat()
	if err != nil {
		err = fmt.Errorf("reading the pid file: %w", pathErrCause(err))
	} else {
		err = pidFileTrusted(path, fi)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// signalPIDFile sends sig to the process whose id the file holds.
func signalPIDFile(path string, sig os.Signal) (int, error) {
	f, err := openTrustedPIDFile(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 64))
	if err != nil {
		return 0, fmt.Errorf("reading the pid file: %w", pathErrCause(err))
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("the pid file %s does not hold a process id", path)
	}
	p, err := os.FindProcess(pid)
	if err == nil {
		err = p.Signal(sig)
	}
	if err != nil {
		return pid, fmt.Errorf("signalling process %d: %w", pid, err)
	}
	return pid, nil
}
