package chaos

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
)

// A red run in CI leaves no directory behind: the report itself must show what happened
// to the leases a violation names.
func TestEvidence_ShowsTheLeasesHistoryAndItsLogLines(t *testing.T) {
	const id, other = "01a23623-5984-7cd0-8221-b19cfdd40a6c", "01a23623-0000-7cd0-8221-b19cfdd40a6c"
	dir := t.TempDir()
	workers := filepath.Join(dir, "syvault-workers-1.log")
	var log strings.Builder
	log.WriteString(`{"msg":"message will be retried","lease_id":"` + id + `","err":"drop vf_tmp_sbi00639: timeout"}` + "\n")
	log.WriteString(`{"msg":"user dropped","lease_id":"` + other + `"}` + "\n")
	for i := range evidenceLogLines + 5 {
		fmt.Fprintf(&log, `{"msg":"attempt %d","username":"vf_tmp_sbi00639"}`+"\n", i)
	}
	if err := os.WriteFile(workers, []byte(log.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	pg := filepath.Join(dir, "postgresql.log")
	if err := os.WriteFile(pg, []byte("ERROR:  role \"vf_tmp_sbi00639\" cannot be dropped\nLOG:  checkpoint\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := history("vf_tmp_sbi00639", t0.Add(time.Minute), req, act, rev)
	var out strings.Builder
	printEvidence(&out, []Violation{{InvOrphans, "lease " + id + " left revoking"}},
		map[string]*History{id: h}, nil, []string{workers, pg, filepath.Join(dir, "never-started.log")})
	got := out.String()
	for _, want := range []string{
		"evidence: lease " + id, "stream seq 3", string(rev),
		fmt.Sprintf("syvault-workers-1: %d lines, the last %d", evidenceLogLines+6, evidenceLogLines),
		fmt.Sprintf("attempt %d", evidenceLogLines+4), `postgresql: ERROR:  role "vf_tmp_sbi00639" cannot be dropped`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("evidence lacks %q:\n%s", want, got)
		}
	}
	for _, unwanted := range []string{other, "checkpoint", "attempt 0\""} {
		if strings.Contains(got, unwanted) {
			t.Errorf("evidence shows %q, which is not about the lease:\n%s", unwanted, got)
		}
	}
}

// A target's violation (invariant g) shows its last event, its leases and the log lines
// that name it: its record uid, or its setup role's name, which holds it.
func TestEvidence_ShowsTheTargetsLastEventLeasesAndLogLines(t *testing.T) {
	const uid, other, id = "Tq3Zr8LmP0aB", "Xx9Zr8LmP0aB", "01a23623-5984-7cd0-8221-b19cfdd40a6c"
	dir := t.TempDir()
	workers := filepath.Join(dir, "syvault-workers-1.log")
	log := `{"msg":"could not remove the removed target's shared setup again","record_uid":"` + uid + `"}` + "\n" +
		`{"msg":"target prepared","record_uid":"` + other + `"}` + "\n"
	if err := os.WriteFile(workers, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	pg := filepath.Join(dir, "postgresql.log")
	if err := os.WriteFile(pg, []byte(`ERROR:  role "syvault_`+uid+`" cannot be dropped`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := history("vf_tmp_sbi00639", t0.Add(time.Hour), req, act)
	for i := range h.Events {
		h.Events[i].RecordUID = uid
	}
	var out strings.Builder
	printEvidence(&out, []Violation{{InvRemoved, "postgresql target " + uid + " was removed, but its setup role syvault_" + uid + " is left"}},
		map[string]*History{id: h}, map[string]events.Type{uid: events.TargetRemoved}, []string{workers, pg})
	got := out.String()
	for _, want := range []string{
		"evidence: target " + uid, "last event in the stream: " + string(events.TargetRemoved), "lease " + id + ": active",
		"syvault-workers-1: " + `{"msg":"could not remove the removed target's shared setup again"`, `postgresql: ERROR:  role "syvault_` + uid,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("evidence lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, other) {
		t.Errorf("evidence shows another target's line:\n%s", got)
	}
}
