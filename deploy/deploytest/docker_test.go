package deploytest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDockerfiles checks what can be checked without a container engine: each Dockerfile
// builds a package that exists, statically and reproducibly, in a golang:1.26 stage, and
// runs as a non-root user; the CLI image has a shell for the seed's `sh -c`.
func TestDockerfiles(t *testing.T) {
	root := repoRoot(t)
	tests := []struct {
		name    string
		file    string
		pkgs    []string
		runtime string
	}{
		{name: "server", file: "Dockerfile.server", pkgs: []string{"./cmd/syvault", "./deploy/docker/healthcheck"}, runtime: "gcr.io/distroless/static"},
		{name: "cli", file: "Dockerfile.cli", pkgs: []string{"./cmd/sy"}, runtime: "alpine:"},
	}
	from := regexp.MustCompile(`(?m)^FROM\s+(\S+)`)
	user := regexp.MustCompile(`(?m)^USER\s+(\S+)`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(root, "deploy", "docker", tt.file)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			text := string(data)
			stages := from.FindAllStringSubmatch(text, -1)
			if len(stages) != 2 || stages[0][1] != "golang:1.26" || !strings.HasPrefix(stages[1][1], tt.runtime) {
				t.Errorf("stages %q, want golang:1.26 then %s...", stages, tt.runtime)
			}
			for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags="-s -w`} {
				if !strings.Contains(text, want) {
					t.Errorf("no %s", want)
				}
			}
			for _, pkg := range tt.pkgs {
				if !strings.Contains(text, pkg) {
					t.Errorf("does not build %s", pkg)
				}
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(pkg))); err != nil {
					t.Errorf("builds %s: %v", pkg, err)
				}
			}
			u := user.FindStringSubmatch(text)
			if u == nil || strings.HasPrefix(u[1], "0") || strings.HasPrefix(u[1], "root") {
				t.Errorf("USER %q: want a numeric non-root user", u)
			}
			if _, err := os.Stat(path + ".dockerignore"); err != nil {
				t.Errorf("no %s.dockerignore: %v", tt.file, err)
			}
		})
	}
}
