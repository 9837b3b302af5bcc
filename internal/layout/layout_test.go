package layout

import (
	"bufio"
	"bytes"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/syvault/syvault"

// pkg is one package of the module as go list sees it.
type pkg struct {
	path, dir, name string
	deps            []string // every package it depends on, directly or not
}

func listPackages(t *testing.T) map[string]pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}\t{{.Dir}}\t{{.Name}}\t{{join .Deps \" \"}}", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	pkgs := map[string]pkg{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 4 {
			t.Fatalf("go list line %q", sc.Text())
		}
		pkgs[f[0]] = pkg{path: f[0], dir: f[1], name: f[2], deps: strings.Fields(f[3])}
	}
	return pkgs
}

func own(p string) bool { return p == module || strings.HasPrefix(p, module+"/") }

// notForTranslators is what the HTTP adapters (the API and the dashboard) must not
// depend on: NATS, database drivers, and the command and query sides' implementations.
func notForTranslators(d string) bool {
	return strings.HasPrefix(d, "github.com/nats-io/") || strings.HasPrefix(d, "github.com/jackc/") ||
		strings.HasPrefix(d, "github.com/go-sql-driver/") || strings.HasPrefix(d, module+"/workers") ||
		strings.HasPrefix(d, module+"/events/jsstore") || d == module+"/projections" || d == module+"/internal/command"
}

// forDrivers says what a database driver may import of the module.
func forDrivers(d string) bool {
	return d == module+"/events" || d == module+"/workers/driver" || d == module+"/internal/turns"
}

// TestLayout_Dependencies: the dependency rules of the design, on every dependency,
// direct or not.
func TestLayout_Dependencies(t *testing.T) {
	pkgs := listPackages(t)
	rules := []struct {
		pkg     string
		allowed func(dep string) bool // nil: forbidden when forbid says so
		forbid  func(dep string) bool
		why     string
	}{
		{pkg: "events", allowed: func(string) bool { return false },
			why: "the domain imports none of the module's packages"},
		{pkg: "workers/driver", allowed: func(d string) bool { return d == module+"/events" },
			why: "the driver seam is a leaf: it knows the domain and nothing else"},
		{pkg: "internal/turns", allowed: func(string) bool { return false },
			why: "the per-key turns are a leaf any layer may use: they import none of the module's packages"},
		{pkg: "workers/postgres", allowed: forDrivers, why: "a driver imports only the domain, the driver seam and the turns"},
		{pkg: "workers/mysql", allowed: forDrivers, why: "a driver imports only the domain, the driver seam and the turns"},
		{pkg: "http", forbid: notForTranslators, why: "http translates: it imports no NATS package, no database driver, and reaches the command and query sides through interfaces"},
		{pkg: "http/ui", forbid: notForTranslators, why: "the dashboard translates like the API: no NATS, no database driver, the command and query sides through interfaces"},
		{pkg: "workers", forbid: func(d string) bool { return d == module+"/http" || strings.HasPrefix(d, module+"/http/") },
			why: "workers never import http"},
		{pkg: "projections", forbid: func(d string) bool {
			return strings.HasPrefix(d, module+"/workers") || d == module+"/http" || strings.HasPrefix(d, module+"/http/")
		}, why: "projections never import workers or http"},
	}
	for _, r := range rules {
		p, ok := pkgs[module+"/"+r.pkg]
		if !ok {
			t.Errorf("package %s is gone: update the rules", r.pkg)
			continue
		}
		for _, d := range p.deps {
			switch {
			case r.allowed != nil && own(d) && !r.allowed(d):
				t.Errorf("%s depends on %s: %s", r.pkg, d, r.why)
			case r.forbid != nil && r.forbid(d):
				t.Errorf("%s depends on %s: %s", r.pkg, d, r.why)
			}
		}
	}
}

// TestLayout_OnlyCommandsReadConfiguration: flags and environment variables are read in
// cmd alone (and in the test-support packages), so every other package takes its
// configuration as arguments.
func TestLayout_OnlyCommandsReadConfiguration(t *testing.T) {
	for path, p := range listPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(path, module), "/")
		if strings.HasPrefix(rel, "cmd/") || p.name == "main" || strings.HasSuffix(p.name, "test") {
			continue
		}
		files, _ := filepath.Glob(filepath.Join(p.dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				if v, _ := strconv.Unquote(imp.Path.Value); v == "flag" || v == "github.com/spf13/pflag" {
					t.Errorf("%s imports %s: only cmd reads flags", f, v)
				}
			}
			for _, call := range []string{"os.Getenv(", "os.LookupEnv(", "os.Environ("} {
				if bytes.Contains(src, []byte(call)) {
					t.Errorf("%s calls %s: only cmd reads the environment", f, strings.TrimSuffix(call, "("))
				}
			}
		}
	}
}
