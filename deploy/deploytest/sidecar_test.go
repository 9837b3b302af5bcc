package deploytest

import (
	"bytes"
	"context"
	"path"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/syvault/syvault/cmd/sy/cli"
)

const (
	sidecarDeployment = "myapp"
	cliImagePath      = "syvault/cli:"
)

// agentContainer finds the container running `sy agent` in a pod spec, and whether it is
// a native sidecar (an init container that keeps running) rather than a second container.
func agentContainer(t *testing.T, spec *corev1.PodSpec) (c corev1.Container, native bool) {
	t.Helper()
	var found []corev1.Container
	for _, c := range allContainers(spec) {
		if len(c.Args) > 0 && c.Args[0] == "agent" {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d containers run sy agent, want 1", len(found))
	}
	c = found[0]
	for _, ic := range spec.InitContainers {
		if ic.Name == c.Name {
			if ic.RestartPolicy == nil || *ic.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				t.Fatalf("init container %s runs sy agent without restartPolicy: Always: the application would never start", c.Name)
			}
			return c, true
		}
	}
	return c, false
}

// mountOf returns the volume mount of c that holds file, the longest match.
func mountOf(c corev1.Container, file string) (corev1.VolumeMount, bool) {
	var best corev1.VolumeMount
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") && len(m.MountPath) > len(best.MountPath) {
			best = m
		}
	}
	return best, best.Name != ""
}

// runAsUser is the uid a container runs as, from its own or the pod's securityContext.
func runAsUser(pod *corev1.PodSecurityContext, c corev1.Container) int64 {
	if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
		return *c.SecurityContext.RunAsUser
	}
	if pod != nil && pod.RunAsUser != nil {
		return *pod.RunAsUser
	}
	return -1
}

// TestSidecar_AgentKeepsTheApplicationsFileFresh checks the sy agent example: a
// Deployment in the seed's namespace whose sy agent (a native sidecar or a second
// container) writes the credentials into an emptyDir that every application container
// mounts read-only, as the uid that reads them, with the CronJob's server and Secret,
// and with flags sy agent accepts.
func TestSidecar_AgentKeepsTheApplicationsFileFresh(t *testing.T) {
	objs := MustLoadManifests(t)
	d, ok := find[*appsv1.Deployment](objs, seedNamespace, sidecarDeployment)
	if !ok {
		t.Fatalf("no Deployment %s/%s", seedNamespace, sidecarDeployment)
	}
	spec := &d.Spec.Template.Spec
	agent, native := agentContainer(t, spec)
	if !strings.HasPrefix(agent.Image, cliImagePath) || !pinned(agent.Image) {
		t.Errorf("sy agent image %q, want %s<pinned tag>", agent.Image, cliImagePath)
	}
	if len(agent.Command) > 0 {
		t.Errorf("command %q overrides the CLI image's entrypoint (sy); use args", agent.Command)
	}

	// The flags exist and their values parse: sy stops at --help only after parsing them.
	var stdout, stderr bytes.Buffer
	noEnv := func(string) string { return "" }
	if code := cli.Main(context.Background(), append(slices.Clone(agent.Args), "--help"), noEnv, nil, &stdout, &stderr); code != cli.ExitOK {
		t.Errorf("sy %s: exit %d: %s", strings.Join(agent.Args, " "), code, stderr.String())
	}
	if argValue(agent.Args, "--record-uid") != "7Kj9mNpQ2xRs" {
		t.Errorf("--record-uid %q, want the CronJob's 7Kj9mNpQ2xRs", argValue(agent.Args, "--record-uid"))
	}
	if slices.Contains(agent.Args, "--once") {
		t.Error("the sidecar runs sy agent --once: nothing would keep the file fresh")
	}

	// The same server and Secret as the CronJob.
	env := map[string]corev1.EnvVar{}
	for _, e := range agent.Env {
		env[e.Name] = e
	}
	if v := env["SY_SERVER"].Value; v != seedServer {
		t.Errorf("SY_SERVER %q, want the CronJob's %q", v, seedServer)
	}
	for name, key := range seedSecretKeys {
		ref := env[name].ValueFrom
		if ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != seedSecret || ref.SecretKeyRef.Key != key {
			t.Errorf("%s: %+v, want secretKeyRef %s/%s like the CronJob", name, ref, seedSecret, key)
		}
	}
	if spec.ServiceAccountName != seedSA {
		t.Errorf("serviceAccountName %q, want the CronJob's %q", spec.ServiceAccountName, seedSA)
	}

	// The files land in an emptyDir the application containers read.
	output := argValue(agent.Args, "--output")
	if output == "" {
		t.Fatal("sy agent has no --output")
	}
	files := []string{output}
	for i, a := range agent.Args {
		if a == "--template" && i+1 < len(agent.Args) {
			in, out, _ := strings.Cut(agent.Args[i+1], ":")
			files = append(files, out)
			checkTemplateSource(t, objs, spec, agent, in)
		}
	}
	mount, ok := mountOf(agent, output)
	if !ok || mount.ReadOnly {
		t.Fatalf("sy agent writes %s, which is on no writable volume of its container", output)
	}
	for _, f := range files {
		if m, ok := mountOf(agent, f); !ok || m.Name != mount.Name {
			t.Errorf("sy agent writes %s outside the shared volume %s", f, mount.Name)
		}
	}
	var shared *corev1.Volume
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == mount.Name {
			shared = &spec.Volumes[i]
		}
	}
	if shared == nil || shared.EmptyDir == nil {
		t.Fatalf("volume %s is not an emptyDir of the pod", mount.Name)
	}
	apps := 0
	for _, c := range spec.Containers {
		if c.Name == agent.Name {
			continue
		}
		apps++
		var m *corev1.VolumeMount
		for i := range c.VolumeMounts {
			if c.VolumeMounts[i].Name == mount.Name {
				m = &c.VolumeMounts[i]
			}
		}
		if m == nil || !m.ReadOnly {
			t.Errorf("application container %s does not mount %s read-only", c.Name, mount.Name)
			continue
		}
		// sy writes the files with mode 0600, so only its own uid can read them.
		if a, u := runAsUser(spec.SecurityContext, agent), runAsUser(spec.SecurityContext, c); a != u || u < 0 {
			t.Errorf("container %s runs as uid %d, sy agent as %d: it cannot read the 0600 files", c.Name, u, a)
		}
	}
	if apps == 0 {
		t.Error("no application container beside sy agent")
	}

	// A native sidecar holds the application back until the first lease is written.
	if native {
		p := agent.StartupProbe
		if p == nil || p.Exec == nil || !slices.Contains(p.Exec.Command, output) {
			t.Errorf("the native sidecar has no startup probe waiting for %s: %+v", output, p)
		}
	}
}

// checkTemplateSource requires a --template's source file to come from a ConfigMap key
// mounted in the agent's container.
func checkTemplateSource(t *testing.T, objs []object, spec *corev1.PodSpec, agent corev1.Container, in string) {
	t.Helper()
	m, ok := mountOf(agent, in)
	if !ok {
		t.Errorf("template %s is on no volume of the sy agent container", in)
		return
	}
	for _, v := range spec.Volumes {
		if v.Name != m.Name || v.ConfigMap == nil {
			continue
		}
		cm, ok := find[*corev1.ConfigMap](objs, seedNamespace, v.ConfigMap.Name)
		if _, has := cm.Data[path.Base(in)]; !ok || !has {
			t.Errorf("template %s: ConfigMap %s has no key %s", in, v.ConfigMap.Name, path.Base(in))
		}
		return
	}
	t.Errorf("template %s is not on a ConfigMap volume", in)
}
