package deploytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// TestImagesTask: `go tool task images`, deploy/README.md's one command for the images,
// builds every syvault image the manifests name from its Dockerfile, with the registry
// prefix and version asked for; without docker, or without its daemon, it stops before
// building and says what to do. A stand-in docker records what it is asked, so no
// container engine is needed.
func TestImagesTask(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	root := repoRoot(t)
	task := func(t *testing.T, path string, args ...string) (string, error) {
		cmd := exec.Command(goBin, append([]string{"tool", "task", "images"}, args...)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "PATH="+path)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	fakeDocker := func(t *testing.T, infoStatus string) (dir, log string) {
		dir = t.TempDir()
		log = filepath.Join(dir, "calls")
		script := "#!/bin/sh\necho \"$@\" >> " + log + "\n[ \"$1\" = info ] && exit " + infoStatus + "\nexit 0\n"
		if err := os.WriteFile(filepath.Join(dir, "docker"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		return dir, log
	}

	t.Run("builds what the manifests name", func(t *testing.T) {
		dir, log := fakeDocker(t, "0")
		if out, err := task(t, dir+":"+os.Getenv("PATH")); err != nil {
			t.Fatalf("task images: %v\n%s", err, out)
		}
		calls, _ := os.ReadFile(log)
		built := map[string]string{} // tag -> Dockerfile
		for _, line := range strings.Split(string(calls), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != "build" {
				continue
			}
			if f[len(f)-1] != "." {
				t.Errorf("docker %s: the build context is not the repository root", line)
			}
			file := f[slices.Index(f, "-f")+1]
			for i, a := range f {
				if a == "-t" {
					built[f[i+1]] = file
				}
			}
		}
		for _, w := range workloads(MustLoadManifests(t)) {
			for _, c := range allContainers(&w.Template.Spec) {
				if !strings.HasPrefix(c.Image, "syvault/") {
					continue
				}
				want := "deploy/docker/Dockerfile.server"
				if strings.HasPrefix(c.Image, "syvault/cli:") {
					want = "deploy/docker/Dockerfile.cli"
				}
				if built[c.Image] != want {
					t.Errorf("%s names %s; the task built it from %q, want %s (docker calls:\n%s)", w.Name, c.Image, built[c.Image], want, calls)
				}
			}
		}
	})
	t.Run("registry and version", func(t *testing.T) {
		dir, log := fakeDocker(t, "0")
		if out, err := task(t, dir+":"+os.Getenv("PATH"), "REGISTRY=registry.example.com/", "VERSION=9.9.9"); err != nil {
			t.Fatalf("task images: %v\n%s", err, out)
		}
		calls, _ := os.ReadFile(log)
		for _, want := range []string{"--build-arg VERSION=9.9.9 -t registry.example.com/syvault/server:9.9.9 .",
			"-t registry.example.com/syvault/cli:latest -t registry.example.com/syvault/cli:9.9.9 ."} {
			if !strings.Contains(string(calls), want) {
				t.Errorf("no docker call with %q:\n%s", want, calls)
			}
		}
	})
	t.Run("no daemon", func(t *testing.T) {
		dir, log := fakeDocker(t, "1")
		out, err := task(t, dir+":"+os.Getenv("PATH"))
		calls, _ := os.ReadFile(log)
		if err == nil || !strings.Contains(out, "cannot reach its daemon") || strings.Contains(string(calls), "build") {
			t.Fatalf("task images without a daemon: %v\n%s\ndocker calls:\n%s", err, out, calls)
		}
	})
	t.Run("no docker", func(t *testing.T) {
		// A PATH with the shell's tools but no docker.
		dir := t.TempDir()
		for _, tool := range []string{"sh"} {
			p, err := exec.LookPath(tool)
			if err != nil {
				t.Skip(err)
			}
			if err := os.Symlink(p, filepath.Join(dir, tool)); err != nil {
				t.Fatal(err)
			}
		}
		out, err := task(t, dir)
		if err == nil || !strings.Contains(out, "docker is not installed") || !strings.Contains(out, "Dockerfile.server") {
			t.Fatalf("task images without docker: %v\n%s", err, out)
		}
	})
}

// TestOverlay_SetsServerAndDropsSecrets: the overlay deploy/README.md writes keeps the
// placeholder Secrets out and points the CronJob's and the sidecar's SY_SERVER at the
// in-cluster Service, which the API servers list among their public URLs. The patches
// replace the first variable of the first init container: SY_SERVER in both manifests.
// With kubectl at hand, the overlay is built as written.
func TestOverlay_SetsServerAndDropsSecrets(t *testing.T) {
	root := repoRoot(t)
	objs := MustLoadManifests(t)
	const inCluster = "http://syvault.syvault.svc"
	cron, ok := find[*batchv1.CronJob](objs, seedNamespace, seedName)
	app, ok2 := find[*appsv1.Deployment](objs, "myapp", "myapp")
	if !ok || !ok2 {
		t.Fatal("no CronJob db-credential-refresh or Deployment myapp in myapp")
	}
	for name, spec := range map[string]*corev1.PodSpec{"CronJob": &cron.Spec.JobTemplate.Spec.Template.Spec, "Deployment": &app.Spec.Template.Spec} {
		if len(spec.InitContainers) == 0 || len(spec.InitContainers[0].Env) == 0 || spec.InitContainers[0].Env[0].Name != "SY_SERVER" {
			t.Errorf("%s: the first variable of the first init container is not SY_SERVER: the README's patch would miss it", name)
		}
	}
	api, ok := find[*appsv1.Deployment](objs, "syvault", "syvault-api")
	if !ok || !slices.Contains(strings.Split(envValue(api.Spec.Template.Spec.Containers[0], "SYVAULT_PUBLIC_URL"), ","), inCluster) {
		t.Errorf("the API's SYVAULT_PUBLIC_URL does not list %s", inCluster)
	}

	data, err := os.ReadFile(filepath.Join(root, "deploy", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)cat > \.\./syvault-prod/kustomization\.yaml <<'EOF'\n(.*?)\nEOF`).FindSubmatch(data)
	if m == nil {
		t.Fatal("deploy/README.md no longer writes the overlay's kustomization.yaml")
	}
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("kubectl is required (CI=true): %v", err)
		}
		t.Skipf("kubectl not installed, the overlay is not built: %v", err)
	}
	overlay := t.TempDir()
	rel, err := filepath.Rel(overlay, filepath.Join(root, "deploy", "kubernetes"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(m[1]), "../syvault/deploy/kubernetes", rel, 1)
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(kubectl, "kustomize", overlay).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize of the README's overlay: %v\n%s", err, out)
	}
	built := string(out)
	servers := regexp.MustCompile(`name: SY_SERVER\s+value: "?([^"\s]+)`).FindAllStringSubmatch(built, -1)
	if len(servers) != 2 || servers[0][1] != inCluster || servers[1][1] != inCluster {
		t.Errorf("SY_SERVER values %q, want %s twice", servers, inCluster)
	}
	if strings.Contains(built, "kind: Secret") {
		t.Errorf("the overlay still applies a placeholder Secret")
	}
}

// TestInitInThePod: deploy/README.md registers the first admin client with
// `kubectl exec deploy/syvault-api -- syvault init --admin-client-file -`; the API
// Deployment gives that process everything init reads (the NATS URL and credential, the
// master key, the replicas and the public URL) and runs the image whose entrypoint is
// syvault.
func TestInitInThePod(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	const command = "kubectl -n syvault exec deploy/syvault-api -- syvault init --admin-client-file - > admin-client.json"
	if !strings.Contains(string(data), command) {
		t.Fatalf("deploy/README.md no longer runs %q", command)
	}
	api, ok := find[*appsv1.Deployment](MustLoadManifests(t), "syvault", "syvault-api")
	if !ok {
		t.Fatal("no Deployment syvault-api")
	}
	c := api.Spec.Template.Spec.Containers[0]
	for _, env := range []string{"SYVAULT_NATS_URL", "SYVAULT_NATS_CREDS", "SYVAULT_MASTER_KEY_FILE", "SYVAULT_REPLICAS", "SYVAULT_PUBLIC_URL"} {
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == env }) {
			t.Errorf("syvault-api does not set %s, which init in its pod needs", env)
		}
	}
	if !strings.HasPrefix(c.Image, "syvault/server:") {
		t.Errorf("syvault-api runs %s, not the server image", c.Image)
	}
}

// envValue is the literal value of the variable name in c, or "".
func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}
