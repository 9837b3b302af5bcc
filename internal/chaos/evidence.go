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
		for _, f := range logs {
			lines := matchingLines(f, needles)
			if len(lines) > evidenceLogLines {
				fmt.Fprintf(w, "  %s: %d lines, the last %d:\n", logName(f), len(lines), evidenceLogLines)
				lines = lines[len(lines)-evidenceLogLines:]
			}
			for _, l := range lines {
				fmt.Fprintf(w, "  %s: %s\n", logName(f), l)
			}
		}
	}
}

// matchingLines returns the lines of file that contain any needle.
func matchingLines(file string, needles []string) []string {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil // a process that never started has no log
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
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
