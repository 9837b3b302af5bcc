package deploytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestPrometheusRules: deploy/prometheus's rules parse, and their unit tests pass (an
// alert fires on what it is for and not on what it leaves out, such as clients' own
// refusals or a revocation that recovers within its delay), both by promtool. That every
// SyVault metric the rules name is one the server exports is cmd/syvault's TestMetrics.
func TestPrometheusRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool is required (CI=true; go tool task promtool installs it): %v", err)
		}
		t.Skipf("promtool not installed (go tool task promtool), the rules are not checked: %v", err)
	}
	dir := filepath.Join(repoRoot(t), "deploy", "prometheus")
	for _, args := range [][]string{{"check", "rules", "syvault-rules.yaml"}, {"test", "rules", "syvault-rules.test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
