package deploytest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// composeFile is the part of the Compose specification deploy/compose/compose.yaml uses.
// It is decoded strictly, so a misspelt key fails; add a field here when the file starts
// using a new one.
type composeFile struct {
	Name     string                    `json:"name"`
	Services map[string]composeService `json:"services"`
	Volumes  map[string]any            `json:"volumes"`
}

type composeService struct {
	Image       string            `json:"image"`
	Build       *composeBuild     `json:"build"`
	Command     []string          `json:"command"`
	Environment map[string]string `json:"environment"`
	Ports       []string          `json:"ports"`
	Volumes     []string          `json:"volumes"`
	DependsOn   map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
	Healthcheck *struct {
		Test        []string `json:"test"`
		Interval    string   `json:"interval"`
		Timeout     string   `json:"timeout"`
		Retries     int      `json:"retries"`
		StartPeriod string   `json:"start_period"`
	} `json:"healthcheck"`
	StopGracePeriod string `json:"stop_grace_period"`
	// Restart "no" marks a one-shot service (it runs to completion; others wait for that).
	Restart string `json:"restart"`
}

type composeBuild struct {
	Context    string `json:"context"`
	Dockerfile string `json:"dockerfile"`
}

func TestCompose(t *testing.T) {
	dir := filepath.Join(repoRoot(t), "deploy", "compose")
	data, err := os.ReadFile(filepath.Join(dir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	for _, name := range []string{"postgres", "mysql", "nats", "syvault"} {
		if _, ok := c.Services[name]; !ok {
			t.Errorf("no service %s", name)
		}
	}
	if img := c.Services["postgres"].Image; !strings.HasPrefix(img, "postgres:15") {
		t.Errorf("postgres image %q, want PostgreSQL 15", img)
	}
	if c.Services["postgres"].Environment["POSTGRES_PASSWORD"] == "" {
		t.Error("postgres: no POSTGRES_PASSWORD")
	}
	if img := c.Services["mysql"].Image; !strings.HasPrefix(img, "mysql:8.0") {
		t.Errorf("mysql image %q, want MySQL 8.0", img)
	}
	if nats := c.Services["nats"]; !slices.Contains(nats.Command, "-js") {
		t.Errorf("nats command %q does not enable JetStream (-js)", nats.Command)
	}

	for name, s := range c.Services {
		oneShot := s.Restart == "no"
		if !oneShot && (s.Healthcheck == nil || len(s.Healthcheck.Test) == 0) {
			t.Errorf("service %s: no healthcheck", name)
		}
		if s.Image != "" && s.Build == nil && !pinned(s.Image) {
			t.Errorf("service %s: image %q has no tag", name, s.Image)
		}
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("service %s: port %q is not published on 127.0.0.1 only", name, p)
			}
		}
		for dep, cond := range s.DependsOn {
			if _, ok := c.Services[dep]; !ok {
				t.Errorf("service %s depends on unknown service %s", name, dep)
			}
			want := "service_healthy"
			if c.Services[dep].Restart == "no" {
				want = "service_completed_successfully"
			}
			if cond.Condition != want {
				t.Errorf("service %s: depends_on %s with condition %q, want %s", name, dep, cond.Condition, want)
			}
			if want == "service_healthy" && c.Services[dep].Healthcheck == nil {
				t.Errorf("service %s waits for %s to be healthy, which has no healthcheck", name, dep)
			}
		}
		for _, v := range s.Volumes {
			if src, _, ok := strings.Cut(v, ":"); ok && !strings.ContainsAny(src, "./") {
				if _, declared := c.Volumes[src]; !declared {
					t.Errorf("service %s: named volume %s is not declared", name, src)
				}
			}
		}
	}

	// NATS admits only the nkey nats-credential makes, and syvault joins with it.
	nats := c.Services["nats"]
	if conf := argValue(nats.Command, "-c"); conf != "/nats-credential/nats-auth.conf" {
		t.Errorf("nats runs without the authorization nats-credential writes (-c %q)", conf)
	}
	if cred := c.Services["nats-credential"]; len(cred.Command) < 3 || cred.Command[0] != "nats-credential" || argValue(cred.Command, "--out") != "/nats-credential" {
		t.Errorf("nats-credential command %q, want nats-credential --out /nats-credential", cred.Command)
	}
	sy := c.Services["syvault"]
	if sy.Build == nil {
		t.Fatal("syvault is not built from this repository")
	}
	if got := argValue(sy.Command, "--nats-creds"); got != "/nats-credential/nkey-seed" {
		t.Errorf("syvault joins NATS with --nats-creds %q, want the seed nats-credential writes", got)
	}
	if cred := c.Services["nats-credential"]; cred.Build == nil || cred.Image != sy.Image || *cred.Build != *sy.Build {
		t.Error("nats-credential does not run the syvault image built from this repository")
	}
	context := filepath.Join(dir, filepath.FromSlash(sy.Build.Context))
	if _, err := os.Stat(filepath.Join(context, "go.mod")); err != nil {
		t.Errorf("syvault build context %s is not the repository root: %v", sy.Build.Context, err)
	}
	if sy.Build.Dockerfile != "deploy/docker/Dockerfile.server" {
		t.Errorf("syvault dockerfile %q, want deploy/docker/Dockerfile.server", sy.Build.Dockerfile)
	}
	if _, err := os.Stat(filepath.Join(context, filepath.FromSlash(sy.Build.Dockerfile))); err != nil {
		t.Errorf("syvault dockerfile: %v", err)
	}
	flags, _ := readmeFlags(t)
	if len(sy.Command) == 0 || sy.Command[0] != "serve" {
		t.Errorf("syvault command %q, want serve ...", sy.Command)
	}
	for _, f := range flagsOf(sy.Command) {
		if !flags[f] {
			t.Errorf("syvault command: flag %s is not in README.md's flag table", f)
		}
	}
	for flag, want := range map[string]string{"--nats-url": "nats://nats:4222", "--listen": "0.0.0.0:8200"} {
		if got := argValue(sy.Command, flag); got != want {
			t.Errorf("syvault command: %s %q, want %q", flag, got, want)
		}
	}
	if !slices.Contains(sy.Command, "--dev") {
		t.Error("syvault command: no --dev")
	}
	if !slices.Contains(sy.Ports, "127.0.0.1:8200:8200") {
		t.Errorf("syvault ports %q, want 127.0.0.1:8200:8200", sy.Ports)
	}
	if _, ok := sy.DependsOn["nats"]; !ok {
		t.Error("syvault does not wait for nats")
	}
}
