package chaos

import (
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/syvault/syvault/events"
)

// A violation found in CI is worth little without what led to it, and CI keeps no run
// directory: so the report ends with, for each lease a violation names (the first few),
// its history in the stream and the lines of every process's log that mention it or its
// user; for each target (the first few), its last event, its leases, and the lines that
// mention it. Logs carry no secret (the services never log one; PostgreSQL logs errors
// only, MariaDB no statement), so neither does this.
const (
	evidenceLeases = 4
	// evidenceLogLines is per log file: the last lines, nearest the violation.
	evidenceLogLines = 25
)

var (
	leaseIDPattern  = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	usernamePattern = regexp.MustCompile(`\bvf_[a-z0-9_]+`)
	targetPattern   = regexp.MustCompile(`\btarget ([0-9A-Za-z]{12})\b`)
)

// printEvidence writes the evidence of violations to w: histories by lease id, the last
// event of each target recorded (targets), logs the log files to search.
func printEvidence(w io.Writer, violations []Violation, histories map[string]*History, targets map[string]events.Type, logs []string) {
	lines := make([][]string, len(logs)) // each log read once, for every lease and target
	for i, f := range logs {
		if data, err := os.ReadFile(f); err == nil { // a process that never started has no log
			lines[i] = strings.Split(string(data), "\n")
		}
	}
	printLines := func(needles []string) {
		for i, f := range logs {
			found := matching(lines[i], needles)
			if len(found) > evidenceLogLines {
				fmt.Fprintf(w, "  %s: %d lines, the last %d:\n", logName(f), len(found), evidenceLogLines)
				found = found[len(found)-evidenceLogLines:]
			}
			for _, l := range found {
				fmt.Fprintf(w, "  %s: %s\n", logName(f), l)
			}
		}
	}
	for _, id := range named(violations, leaseIDPattern) {
		fmt.Fprintf(w, "\n--- evidence: lease %s ---\n", id)
		needles := []string{id}
		if h := histories[id]; h != nil {
			for i, e := range h.Events {
				fmt.Fprintf(w, "  stream seq %d  %s  %s", h.Seqs[i], e.Time.UTC().Format(time.RFC3339Nano), e.Type)
				if e.Reason != "" {
					fmt.Fprintf(w, "  (%s)", e.Reason)
				}
				fmt.Fprintln(w)
			}
			if u := h.Fold().Username; u != "" {
				needles = append(needles, u)
			}
		} else {
			fmt.Fprintln(w, "  no history in the stream")
		}
		for _, v := range violations {
			if strings.Contains(v.What, id) {
				needles = append(needles, usernamePattern.FindAllString(v.What, -1)...)
			}
		}
		printLines(needles)
	}
	// A target's lines name its record uid (its own, its setup role's, its leases').
	for _, uid := range named(violations, targetPattern) {
		fmt.Fprintf(w, "\n--- evidence: target %s ---\n", uid)
		last := string(targets[uid])
		if last == "" {
			last = "none: never recorded"
		}
		fmt.Fprintf(w, "  last event in the stream: %s\n", last)
		for _, id := range slices.Sorted(maps.Keys(histories)) {
			if l := histories[id].Fold(); l.RecordUID == uid {
				fmt.Fprintf(w, "  lease %s: %s\n", id, l.Status)
			}
		}
		printLines([]string{uid})
	}
}

// named returns what pattern's last group (or whole match) finds in the violations, each
// once, the first evidenceLeases of them.
func named(violations []Violation, pattern *regexp.Regexp) []string {
	var out []string
	for _, v := range violations {
		for _, m := range pattern.FindAllStringSubmatch(v.What, -1) {
			if id := m[len(m)-1]; !slices.Contains(out, id) && len(out) < evidenceLeases {
				out = append(out, id)
			}
		}
	}
	return out
}

// matching returns the lines that contain any needle.
func matching(lines, needles []string) []string {
	var out []string
	for _, line := range lines {
		for _, n := range needles {
			if strings.Contains(line, n) {
				out = append(out, line)
				break
			}
		}
	}
	return out
}

func logName(file string) string { return strings.TrimSuffix(filepath.Base(file), ".log") }
