package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// watchAncestors calls stop once any process this one runs under (its parent, that
// one's parent, and so on, short of init) has exited. A development server started
// through tools that do not pass a SIGTERM on (go tool, go-task, go run) would otherwise
// live on, orphaned, after the command that started it was terminated. Only where
// /proc tells process parentage (Linux); elsewhere it does nothing.
func watchAncestors(ctx context.Context, stop func(reason string)) {
	ancestors := ancestorsOf(os.Getpid())
	if len(ancestors) == 0 {
		return
	}
	go func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for _, a := range ancestors {
				if !a.alive() {
					stop(fmt.Sprintf("the process that started this one (pid %d) has exited", a.pid))
					return
				}
			}
		}
	}()
}

// process is a process by its pid and start time, so a reused pid is not taken for it.
type process struct {
	pid   int
	start string
}

func (p process) alive() bool {
	st, ok := stat(p.pid)
	return ok && st.start == p.start && st.state != "Z"
}

func ancestorsOf(pid int) []process {
	var out []process
	for range 64 {
		st, ok := stat(pid)
		if !ok || st.ppid <= 1 {
			return out
		}
		parent, ok := stat(st.ppid)
		if !ok {
			return out
		}
		out = append(out, process{pid: st.ppid, start: parent.start})
		pid = st.ppid
	}
	return out
}

// procStat is what /proc/<pid>/stat tells of a process: its state (R, S, Z, ...), its
// parent and its start time.
type procStat struct {
	state string
	ppid  int
	start string
	cpu   float64 // seconds of user and system time
}

func stat(pid int) (procStat, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(s[i+1:])
	// After the name: state, ppid, ..., starttime is field 22 overall, 20th here.
	if len(f) < 20 {
		return procStat{}, false
	}
	ppid, err := strconv.Atoi(f[1])
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	// Clock ticks; 100 a second on Linux wherever it runs.
	return procStat{state: f[0], ppid: ppid, start: f[19], cpu: (utime + stime) / 100}, err == nil
}
