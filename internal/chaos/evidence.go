package chaos

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// A violation found in CI is worth little without what led to it, and CI keeps no run
// directory: so the report ends with, for each lease a violation names (the first few),
// its history in the stream and the lines of every process's log that mention it or its
// user. Logs carry no secret (the services never log one), so neither does this.
const (
	evidenceLeases = 4
	// evidenceLogLines is per log file: the last lines, nearest the violation.
	evidenceLogLines = 25
)

var (
	leaseIDPattern  = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	usernamePattern = regexp.MustCompile(`\bvf_[a-z0-9_]+`)
)

// printEvidence writes the evidence of violations to w: histories by lease id, logs the
// log files to search.
func printEvidence(w io.Writer, violations []Violation, histories map[string]*History, logs []string) {
	lines := make([][]string, len(logs)) // each log read once, for every lease
	for i, f := range logs {
		if data, err := os.ReadFile(f); err == nil { // a process that never started has no log
			lines[i] = strings.Split(string(data), "\n")
		}
	}
	var ids []string
	for _, v := range violations {
		for _, id := range leaseIDPattern.FindAllString(v.What, -1) {
			if !slices.Contains(ids, id) && len(ids) < evidenceLeases {
				ids = append(ids, id)
			}
		}
	}
	for _, id := range ids {
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
