package deploytest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// seedCronJob is the CronJob of the product document (shared/seed/dynamic-secrets.txt,
// "Kubernetes CronJob"), copied exactly as printed there. The document's text lost its
// indentation; the lines are the same, indented as the CronJob's structure requires
// (TestSeedCronJob_SameLinesAsDocument compares them where the document is at hand).
const seedCronJob = `apiVersion: batch/v1
kind: CronJob
metadata:
  name: db-credential-refresh
  namespace: myapp
spec:
  schedule: "0 */1 * * *" # every hour
  jobTemplate:
    spec:
      template:
        spec:
          serviceAccountName: myapp-sa
          initContainers:
          - name: fetch-lease
            image: syvault/cli:latest
            command:
            - sh
            - -c
            - |
              sy dynamic lease create \
                --record-uid 7Kj9mNpQ2xRs \
                --ttl 3600 \
                --output /shared/db-creds.json
            volumeMounts:
            - name: shared
              mountPath: /shared
            env:
            - name: SY_SERVER
              value: "https://vault.example.com"
            - name: SY_CLIENT_ID
              valueFrom:
                secretKeyRef:
                  name: syvault-sm
                  key: client-id
            - name: SY_PRIVATE_KEY
              valueFrom:
                secretKeyRef:
                  name: syvault-sm
                  key: private-key
          containers:
          - name: db-migration
            image: myapp/migrations:latest
            command: ["./run-migrations.sh"]
            volumeMounts:
            - name: shared
              mountPath: /shared
              readOnly: true
          volumes:
          - name: shared
            emptyDir: {}
          restartPolicy: OnFailure
`

// The seed's CronJob, field by field.
const (
	seedNamespace    = "myapp"
	seedName         = "db-credential-refresh"
	seedSchedule     = "0 */1 * * *"
	seedSA           = "myapp-sa"
	seedCLIImage     = "syvault/cli:latest"
	seedAppImage     = "myapp/migrations:latest"
	seedSecret       = "syvault-sm"
	seedLeaseCommand = "sy dynamic lease create \\\n  --record-uid 7Kj9mNpQ2xRs \\\n  --ttl 3600 \\\n  --output /shared/db-creds.json\n"
	seedServer       = "https://vault.example.com"
)

var (
	seedCommand = []string{"sh", "-c", seedLeaseCommand}
	seedEnv     = []string{"SY_SERVER", "SY_CLIENT_ID", "SY_PRIVATE_KEY"}
	// seedSecretKeys maps each env var that reads syvault-sm to its key there.
	seedSecretKeys = map[string]string{"SY_CLIENT_ID": "client-id", "SY_PRIVATE_KEY": "private-key"}
	// seedImages are printed with :latest by the seed; every other image is pinned.
	seedImages = map[string]bool{seedCLIImage: true, seedAppImage: true}
)

// The server this repository builds and the values the deployment must agree on.
const (
	syvaultNamespace = "syvault"
	serverImagePath  = "syvault/server:"
	masterKeySecret  = "syvault-master-key"
	masterKeyKey     = "master-key"
	natsURL          = "nats://nats.syvault.svc:4222"
	drainTimeout     = 60 // seconds: Main.close waits this long for work in flight
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		wantErr string
		wantNil bool
	}{
		{name: "ok", doc: "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  selector:\n    a: b\n"},
		{name: "comments only", doc: "# nothing\n", wantNil: true},
		{name: "misspelt field", doc: "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  selectr:\n    a: b\n", wantErr: "selectr"},
		{name: "misspelt nested field", doc: "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  template:\n    spec:\n      containers:\n      - name: c\n        imag: x:1\n", wantErr: "imag"},
		{name: "wrong type", doc: "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: three\n", wantErr: "replicas"},
		{name: "duplicate field", doc: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  name: y\n", wantErr: "name"},
		{name: "unknown kind", doc: "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n", wantErr: "unexpected"},
		{name: "wrong apiVersion", doc: "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata:\n  name: x\n", wantErr: "unexpected"},
		{name: "no kind", doc: "apiVersion: v1\nmetadata:\n  name: x\n", wantErr: "kind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj, _, err := decode([]byte(tt.doc))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("decode: err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if (obj == nil) != tt.wantNil {
				t.Fatalf("decode: obj = %v, want nil %v", obj, tt.wantNil)
			}
		})
	}
}

// TestSeedCronJob_SameLinesAsDocument compares seedCronJob, line by line without leading
// whitespace, with the product document in the shared folder beside the repository
// (../shared), and skips when that folder is not there.
func TestSeedCronJob_SameLinesAsDocument(t *testing.T) {
	path := filepath.Join(filepath.Dir(repoRoot(t)), "shared", "seed", "dynamic-secrets.txt")
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("no product document at %s", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	var doc []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if len(doc) == 0 && line != "apiVersion: batch/v1" {
			continue
		}
		doc = append(doc, line)
		if line == "restartPolicy: OnFailure" {
			break
		}
	}
	var want []string
	for _, line := range strings.Split(strings.TrimSuffix(seedCronJob, "\n"), "\n") {
		want = append(want, strings.TrimSpace(line))
	}
	if !slices.Equal(doc, want) {
		t.Errorf("seedCronJob differs from %s:\ndocument %q\nconstant %q", path, doc, want)
	}
}

func TestKustomization_ListsEveryManifest(t *testing.T) {
	root := kubernetesDir(t)
	data, err := os.ReadFile(filepath.Join(root, kustomizationFile))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
		// Images may be set with `kustomize edit set image`.
		Images []struct {
			Name    string `json:"name"`
			NewName string `json:"newName"`
			NewTag  string `json:"newTag"`
			Digest  string `json:"digest"`
		} `json:"images"`
	}
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("%s: %v", kustomizationFile, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("%s: apiVersion %q kind %q", kustomizationFile, k.APIVersion, k.Kind)
	}
	listed := map[string]bool{}
	for _, r := range k.Resources {
		if listed[r] {
			t.Errorf("%s lists %s twice", kustomizationFile, r)
		}
		listed[r] = true
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(r))); err != nil {
			t.Errorf("%s lists %s: %v", kustomizationFile, r, err)
		}
	}
	for _, f := range manifestFiles(t) {
		if !listed[f] {
			t.Errorf("%s is not listed in %s", f, kustomizationFile)
		}
	}
}

func TestManifests_DecodeStrictly(t *testing.T) {
	objs := MustLoadManifests(t)
	seen := map[string]object{}
	for _, o := range objs {
		if o.Obj.GetName() == "" {
			t.Errorf("%s: no metadata.name", o)
		}
		_, isNamespace := o.Obj.(*corev1.Namespace)
		if !isNamespace && o.Obj.GetNamespace() == "" {
			t.Errorf("%s: no metadata.namespace (the kustomization sets none)", o)
		}
		if !isNamespace {
			if _, ok := find[*corev1.Namespace](objs, "", o.Obj.GetNamespace()); !ok {
				t.Errorf("%s: namespace %q is not among the manifests", o, o.Obj.GetNamespace())
			}
		}
		key := o.Kind + "/" + o.Obj.GetNamespace() + "/" + o.Obj.GetName()
		if prev, dup := seen[key]; dup {
			t.Errorf("%s: also defined at %s", o, prev)
		}
		seen[key] = o
	}
	for _, kind := range []string{"StatefulSet", "Deployment", "Service", "ConfigMap", "Secret", "ServiceAccount", "Namespace", "CronJob", "PodDisruptionBudget"} {
		found := false
		for _, o := range objs {
			found = found || o.Kind == kind
		}
		if !found {
			t.Errorf("no %s among the manifests", kind)
		}
	}
}

func TestManifests_Containers(t *testing.T) {
	objs := MustLoadManifests(t)
	for _, w := range workloads(objs) {
		seed := strings.HasPrefix(w.Name, "CronJob/"+seedNamespace+"/"+seedName)
		for _, c := range allContainers(&w.Template.Spec) {
			where := w.Name + " container " + c.Name
			if seedImages[c.Image] {
				if !seed {
					t.Errorf("%s: image %s is the seed's, unpinned, outside the seed's CronJob", where, c.Image)
				}
			} else if !pinned(c.Image) {
				t.Errorf("%s: image %q has no pinned tag", where, c.Image)
			}
			if seed {
				continue // printed by the seed without resources or probes; checked by TestCronJob_MatchesSeed
			}
			r := c.Resources
			for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if q, ok := r.Requests[name]; !ok || q.IsZero() {
					t.Errorf("%s: no %s request", where, name)
				}
			}
			if q, ok := r.Limits[corev1.ResourceMemory]; !ok || q.IsZero() {
				t.Errorf("%s: no memory limit", where)
			}
			for name, limit := range r.Limits {
				if req, ok := r.Requests[name]; ok && limit.Cmp(req) < 0 {
					t.Errorf("%s: %s limit %s below its request %s", where, name, limit.String(), req.String())
				}
			}
			// A container that serves a port answers probes on it, and every SyVault
			// process (api or workers) serves /healthz and /readyz.
			if (len(c.Ports) > 0 || c.Image == "syvault/server:0.1.0") && (c.ReadinessProbe == nil || c.LivenessProbe == nil) {
				t.Errorf("%s: serves ports but lacks a readiness or liveness probe", where)
			}
			for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
				if p != nil && p.HTTPGet != nil && p.HTTPGet.Port.Type == intstr.String && !hasPort(c, p.HTTPGet.Port.StrVal) {
					t.Errorf("%s: probe on port %q, which the container does not name", where, p.HTTPGet.Port.StrVal)
				}
			}
			if w.Namespace == syvaultNamespace {
				checkRestricted(t, where, w.Template.Spec.SecurityContext, c.SecurityContext)
			}
		}
	}
}

func hasPort(c corev1.Container, name string) bool {
	for _, p := range c.Ports {
		if p.Name == name {
			return true
		}
	}
	return false
}

// checkRestricted checks what the Pod Security "restricted" level the syvault namespace
// enforces asks of a container.
func checkRestricted(t *testing.T, where string, pod *corev1.PodSecurityContext, sc *corev1.SecurityContext) {
	t.Helper()
	if sc == nil {
		t.Errorf("%s: no securityContext", where)
		return
	}
	nonRoot := sc.RunAsNonRoot != nil && *sc.RunAsNonRoot || pod != nil && pod.RunAsNonRoot != nil && *pod.RunAsNonRoot
	if !nonRoot {
		t.Errorf("%s: runAsNonRoot is not set", where)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: root filesystem is writable", where)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", where)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: capabilities must drop ALL and add none", where)
	}
	seccomp := sc.SeccompProfile != nil || pod != nil && pod.SeccompProfile != nil
	if !seccomp {
		t.Errorf("%s: no seccompProfile", where)
	}
}

func TestManifests_References(t *testing.T) {
	objs := MustLoadManifests(t)
	ws := workloads(objs)
	for _, w := range ws {
		spec := &w.Template.Spec
		if w.Selector != nil {
			sel, err := metav1.LabelSelectorAsSelector(w.Selector)
			if err != nil || sel.Empty() || !sel.Matches(labels.Set(w.Template.Labels)) {
				t.Errorf("%s: selector %v does not match its pod template's labels %v", w.Name, w.Selector, w.Template.Labels)
			}
		}
		if sa := spec.ServiceAccountName; sa != "" {
			if _, ok := find[*corev1.ServiceAccount](objs, w.Namespace, sa); !ok {
				t.Errorf("%s: ServiceAccount %s/%s is not among the manifests", w.Name, w.Namespace, sa)
			}
		}
		volumes := map[string]bool{}
		for _, v := range spec.Volumes {
			volumes[v.Name] = true
			if v.ConfigMap != nil {
				if _, ok := find[*corev1.ConfigMap](objs, w.Namespace, v.ConfigMap.Name); !ok {
					t.Errorf("%s: volume %s: ConfigMap %s is not among the manifests", w.Name, v.Name, v.ConfigMap.Name)
				}
			}
		}
		if strings.HasPrefix(w.Name, "StatefulSet/") {
			s, _ := find[*appsv1.StatefulSet](objs, w.Namespace, strings.TrimPrefix(w.Name, "StatefulSet/"+w.Namespace+"/"))
			for _, pvc := range s.Spec.VolumeClaimTemplates {
				volumes[pvc.Name] = true
			}
			svc, ok := find[*corev1.Service](objs, w.Namespace, s.Spec.ServiceName)
			if !ok || svc.Spec.ClusterIP != corev1.ClusterIPNone {
				t.Errorf("%s: serviceName %q is not a headless Service among the manifests", w.Name, s.Spec.ServiceName)
			}
		}
		for _, c := range allContainers(spec) {
			for _, m := range c.VolumeMounts {
				if !volumes[m.Name] {
					t.Errorf("%s container %s: mounts unknown volume %q", w.Name, c.Name, m.Name)
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
					continue
				}
				ref := e.ValueFrom.SecretKeyRef
				s, ok := find[*corev1.Secret](objs, w.Namespace, ref.Name)
				if !ok {
					t.Errorf("%s container %s: env %s: Secret %s/%s is not among the manifests", w.Name, c.Name, e.Name, w.Namespace, ref.Name)
					continue
				}
				_, inString := s.StringData[ref.Key]
				_, inData := s.Data[ref.Key]
				optional := ref.Optional != nil && *ref.Optional
				if !inString && !inData && !optional {
					t.Errorf("%s container %s: env %s: Secret %s has no key %q", w.Name, c.Name, e.Name, ref.Name, ref.Key)
				}
			}
		}
	}
	// Every Service and PodDisruptionBudget selects the pods of some workload.
	selects := func(namespace string, sel *metav1.LabelSelector) []workload {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil || s.Empty() {
			return nil
		}
		var out []workload
		for _, w := range ws {
			if w.Namespace == namespace && s.Matches(labels.Set(w.Template.Labels)) {
				out = append(out, w)
			}
		}
		return out
	}
	for _, svc := range all[*corev1.Service](objs) {
		matched := selects(svc.Namespace, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector})
		if len(matched) == 0 {
			t.Errorf("Service %s/%s selects no workload's pods", svc.Namespace, svc.Name)
		}
		for _, p := range svc.Spec.Ports {
			if p.TargetPort.Type != intstr.String {
				continue
			}
			for _, w := range matched {
				found := false
				for _, c := range w.Template.Spec.Containers {
					found = found || hasPort(c, p.TargetPort.StrVal)
				}
				if !found {
					t.Errorf("Service %s/%s port %s: %s names no port %q", svc.Namespace, svc.Name, p.Name, w.Name, p.TargetPort.StrVal)
				}
			}
		}
	}
	for _, pdb := range all[*policyv1.PodDisruptionBudget](objs) {
		if len(selects(pdb.Namespace, pdb.Spec.Selector)) == 0 {
			t.Errorf("PodDisruptionBudget %s/%s selects no workload's pods", pdb.Namespace, pdb.Name)
		}
		if (pdb.Spec.MaxUnavailable == nil) == (pdb.Spec.MinAvailable == nil) {
			t.Errorf("PodDisruptionBudget %s/%s: set exactly one of minAvailable and maxUnavailable", pdb.Namespace, pdb.Name)
		}
	}
}

func TestCronJob_MatchesSeed(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(kubernetesDir(t), "cronjob-db-credential-refresh.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "\n"+seedCronJob) {
		t.Error("cronjob-db-credential-refresh.yaml does not hold the seed's CronJob text exactly as printed")
	}
	objs := MustLoadManifests(t)
	got, ok := find[*batchv1.CronJob](objs, seedNamespace, seedName)
	if !ok {
		t.Fatalf("no CronJob %s/%s", seedNamespace, seedName)
	}
	want, _, err := decode([]byte(seedCronJob))
	if err != nil {
		t.Fatalf("the seed's CronJob: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("CronJob differs from the seed's:\ngot  %+v\nwant %+v", got, want)
	}

	// The same, field by field, for a clear message.
	if got.Spec.Schedule != seedSchedule {
		t.Errorf("schedule %q, want %q", got.Spec.Schedule, seedSchedule)
	}
	pod := got.Spec.JobTemplate.Spec.Template.Spec
	if pod.ServiceAccountName != seedSA {
		t.Errorf("serviceAccountName %q, want %q", pod.ServiceAccountName, seedSA)
	}
	if pod.RestartPolicy != corev1.RestartPolicyOnFailure {
		t.Errorf("restartPolicy %q, want OnFailure", pod.RestartPolicy)
	}
	if len(pod.InitContainers) != 1 {
		t.Fatalf("%d init containers, want 1", len(pod.InitContainers))
	}
	c := pod.InitContainers[0]
	if c.Image != seedCLIImage {
		t.Errorf("image %q, want %q", c.Image, seedCLIImage)
	}
	if !slices.Equal(c.Command, seedCommand) {
		t.Errorf("command %q, want %q", c.Command, seedCommand)
	}
	var names []string
	for _, e := range c.Env {
		names = append(names, e.Name)
		switch {
		case e.Name == "SY_SERVER":
			if e.Value != seedServer {
				t.Errorf("SY_SERVER %q, want %q", e.Value, seedServer)
			}
		case seedSecretKeys[e.Name] != "":
			ref := e.ValueFrom
			if ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != seedSecret || ref.SecretKeyRef.Key != seedSecretKeys[e.Name] {
				t.Errorf("%s: %+v, want secretKeyRef %s/%s", e.Name, ref, seedSecret, seedSecretKeys[e.Name])
			}
		}
	}
	if !slices.Equal(names, seedEnv) {
		t.Errorf("env %q, want %q", names, seedEnv)
	}
	if len(pod.Containers) != 1 || pod.Containers[0].Image != seedAppImage {
		t.Errorf("containers %+v, want one running %s", pod.Containers, seedAppImage)
	}
	for _, o := range []struct{ kind, name string }{{"ServiceAccount", seedSA}, {"Secret", seedSecret}} {
		var ok bool
		switch o.kind {
		case "ServiceAccount":
			_, ok = find[*corev1.ServiceAccount](objs, seedNamespace, o.name)
		case "Secret":
			_, ok = find[*corev1.Secret](objs, seedNamespace, o.name)
		}
		if !ok {
			t.Errorf("no %s %s/%s for the CronJob", o.kind, seedNamespace, o.name)
		}
	}
}

func TestSyvaultDeployments(t *testing.T) {
	flags, envs := readmeFlags(t)
	objs := MustLoadManifests(t)
	wantReplicas := map[string]int32{"api": 3, "workers": 2}
	seen := map[string]bool{}
	nats, ok := find[*appsv1.StatefulSet](objs, syvaultNamespace, "nats")
	if !ok {
		t.Fatal("no StatefulSet syvault/nats")
	}
	for _, d := range all[*appsv1.Deployment](objs) {
		if d.Namespace != syvaultNamespace {
			continue
		}
		where := "Deployment " + d.Name
		spec := d.Spec.Template.Spec
		if len(spec.Containers) != 1 {
			t.Errorf("%s: %d containers, want 1", where, len(spec.Containers))
			continue
		}
		c := spec.Containers[0]
		if !strings.HasPrefix(c.Image, serverImagePath) {
			t.Errorf("%s: image %q, want %s<tag>", where, c.Image, serverImagePath)
		}
		if len(c.Command) > 0 {
			t.Errorf("%s: command %q overrides the image's entrypoint (syvault); use args", where, c.Command)
		}
		if len(c.Args) == 0 || c.Args[0] != "serve" {
			t.Errorf("%s: args %q, want serve ...", where, c.Args)
		}
		for _, f := range flagsOf(c.Args) {
			if !flags[f] {
				t.Errorf("%s: flag %s is not in README.md's flag table", where, f)
			}
		}
		component := argValue(c.Args, "--components")
		if want, ok := wantReplicas[component]; !ok {
			t.Errorf("%s: --components %q, want api or workers", where, component)
		} else {
			seen[component] = true
			if d.Spec.Replicas == nil || *d.Spec.Replicas != want {
				t.Errorf("%s: replicas %v, want %d", where, d.Spec.Replicas, want)
			}
		}
		env := map[string]corev1.EnvVar{}
		for _, e := range c.Env {
			env[e.Name] = e
			if !envs[e.Name] {
				t.Errorf("%s: env %s is not a SYVAULT_* variable of README.md's flag table", where, e.Name)
			}
		}
		if v := env["SYVAULT_NATS_URL"].Value; v != natsURL {
			t.Errorf("%s: SYVAULT_NATS_URL %q, want %q", where, v, natsURL)
		}
		if v, want := env["SYVAULT_REPLICAS"].Value, "3"; v != want || nats.Spec.Replicas == nil || *nats.Spec.Replicas != 3 {
			t.Errorf("%s: SYVAULT_REPLICAS %q with %v NATS servers, want %s on 3", where, v, nats.Spec.Replicas, want)
		}
		// The master key is a file from the Secret, readable by the pod's group alone: as a
		// variable, every process the container runs (and `env` in a `kubectl exec`) had it.
		if _, ok := env["SYVAULT_MASTER_KEY"]; ok {
			t.Errorf("%s: SYVAULT_MASTER_KEY is set; mount the key and name it in SYVAULT_MASTER_KEY_FILE", where)
		}
		if !mountsSecretKey(&spec, c, env["SYVAULT_MASTER_KEY_FILE"].Value, masterKeySecret, masterKeyKey) {
			t.Errorf("%s: SYVAULT_MASTER_KEY_FILE %q is not Secret %s's key %s, mounted read-only at most group-readable",
				where, env["SYVAULT_MASTER_KEY_FILE"].Value, masterKeySecret, masterKeyKey)
		}
		if g := spec.TerminationGracePeriodSeconds; g == nil || *g <= drainTimeout {
			t.Errorf("%s: terminationGracePeriodSeconds %v, want more than the %ds drain", where, g, drainTimeout)
		}
		if component == "api" {
			if v := env["SYVAULT_LISTEN"].Value; v != "0.0.0.0:8200" {
				t.Errorf("%s: SYVAULT_LISTEN %q, want 0.0.0.0:8200", where, v)
			}
			if v := env["SYVAULT_PUBLIC_URL"].Value; !strings.HasPrefix(v, "https://") {
				t.Errorf("%s: SYVAULT_PUBLIC_URL %q, want an https URL", where, v)
			}
			if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 8200 {
				t.Errorf("%s: ports %+v, want 8200", where, c.Ports)
			}
			for name, p := range map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe} {
				if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != name {
					t.Errorf("%s: want a probe on %s, got %+v", where, name, p)
				}
			}
		}
	}
	for component := range wantReplicas {
		if !seen[component] {
			t.Errorf("no syvault Deployment with --components %s", component)
		}
	}
	svc, ok := find[*corev1.Service](objs, syvaultNamespace, "syvault")
	if !ok {
		t.Fatal("no Service syvault/syvault")
	}
	if svc.Spec.Selector["app.kubernetes.io/component"] != "api" {
		t.Errorf("Service syvault selects %v, want the api pods only", svc.Spec.Selector)
	}
	if _, ok := find[*policyv1.PodDisruptionBudget](objs, syvaultNamespace, "syvault-api"); !ok {
		t.Error("no PodDisruptionBudget syvault-api")
	}
	secret, ok := find[*corev1.Secret](objs, syvaultNamespace, masterKeySecret)
	if !ok {
		t.Fatalf("no Secret %s", masterKeySecret)
	}
	if _, ok := secret.StringData[masterKeyKey]; !ok {
		t.Errorf("Secret %s: no stringData %s", masterKeySecret, masterKeyKey)
	}
}

// argValue returns the value of --name in args ("--name v" or "--name=v").
func argValue(args []string, name string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// mountsSecretKey reports whether file is, in container c of spec, the key of Secret
// secret, mounted read-only with no mode wider than 0440.
func mountsSecretKey(spec *corev1.PodSpec, c corev1.Container, file, secret, key string) bool {
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok || !m.ReadOnly {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name || v.Secret == nil || v.Secret.SecretName != secret {
				continue
			}
			mode := int32(0o644) // Kubernetes' default
			if v.Secret.DefaultMode != nil {
				mode = *v.Secret.DefaultMode
			}
			for _, it := range v.Secret.Items {
				if it.Key == key && it.Path == rel {
					if it.Mode != nil {
						mode = *it.Mode
					}
					return mode&^0o440 == 0
				}
			}
		}
	}
	return false
}
