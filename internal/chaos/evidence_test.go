package chaos

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
		map[string]*History{id: h}, []string{workers, pg, filepath.Join(dir, "never-started.log")})
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
