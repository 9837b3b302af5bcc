package deploytest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// kustomizationFile is read as the list of manifests, never decoded as a resource.
const kustomizationFile = "kustomization.yaml"

// object is one decoded document of a manifest file.
type object struct {
	File  string // relative to deploy/kubernetes
	Index int    // document number in File, from 0
	Kind  string
	Obj   metav1.Object // *appsv1.Deployment, *corev1.Service, ...
}

func (o object) String() string {
	return fmt.Sprintf("%s #%d %s %s/%s", o.File, o.Index, o.Kind, o.Obj.GetNamespace(), o.Obj.GetName())
}

// newTyped returns an empty typed object for apiVersion and kind, or an error for any
// kind these manifests are not expected to hold.
func newTyped(apiVersion, kind string) (metav1.Object, error) {
	switch apiVersion + " " + kind {
	case "apps/v1 StatefulSet":
		return &appsv1.StatefulSet{}, nil
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "v1 Namespace":
		return &corev1.Namespace{}, nil
	case "batch/v1 CronJob":
		return &batchv1.CronJob{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "networking.k8s.io/v1 NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, nil
	}
	return nil, fmt.Errorf("unexpected apiVersion %q kind %q", apiVersion, kind)
}

// decode decodes one YAML document strictly into its typed struct: an unknown or
// duplicated field, a wrong type, or an unknown kind is an error. A document holding
// only comments decodes to (nil, "", nil).
func decode(doc []byte) (metav1.Object, string, error) {
	var probe map[string]any
	if err := yaml.Unmarshal(doc, &probe); err != nil {
		return nil, "", fmt.Errorf("not YAML: %w", err)
	}
	if probe == nil {
		return nil, "", nil
	}
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, "", fmt.Errorf("apiVersion/kind: %w", err)
	}
	if tm.APIVersion == "" || tm.Kind == "" {
		return nil, "", errors.New("document without apiVersion or kind")
	}
	obj, err := newTyped(tm.APIVersion, tm.Kind)
	if err != nil {
		return nil, "", err
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, "", fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return obj, tm.Kind, nil
}

// splitDocuments splits a multi-document YAML stream on its --- lines.
func splitDocuments(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		docs = append(docs, doc)
	}
}

// repoRoot returns the module root: the nearest directory above the test with a go.mod.
func repoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

func kubernetesDir(tb testing.TB) string {
	tb.Helper()
	return filepath.Join(repoRoot(tb), "deploy", "kubernetes")
}

// manifestFiles lists the YAML files under deploy/kubernetes, relative to it, sorted,
// without the kustomization.
func manifestFiles(tb testing.TB) []string {
	tb.Helper()
	root := kubernetesDir(tb)
	var files []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if filepath.Base(rel) != kustomizationFile {
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	if len(files) == 0 {
		tb.Fatalf("no manifests under %s", root)
	}
	sort.Strings(files)
	return files
}

// MustLoadManifests decodes every document of every manifest file strictly, failing the
// test on the first document that does not decode.
func MustLoadManifests(tb testing.TB) []object {
	tb.Helper()
	root := kubernetesDir(tb)
	var objs []object
	for _, file := range manifestFiles(tb) {
		data, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			tb.Fatal(err)
		}
		docs, err := splitDocuments(data)
		if err != nil {
			tb.Fatalf("%s: %v", file, err)
		}
		for i, doc := range docs {
			obj, kind, err := decode(doc)
			if err != nil {
				tb.Fatalf("%s document #%d: %v", file, i, err)
			}
			if obj != nil {
				objs = append(objs, object{File: file, Index: i, Kind: kind, Obj: obj})
			}
		}
	}
	return objs
}

// all returns the objects of type T.
func all[T metav1.Object](objs []object) []T {
	var out []T
	for _, o := range objs {
		if t, ok := o.Obj.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// find returns the object of type T with this namespace and name, or the zero T.
func find[T metav1.Object](objs []object, namespace, name string) (T, bool) {
	for _, t := range all[T](objs) {
		if t.GetNamespace() == namespace && t.GetName() == name {
			return t, true
		}
	}
	var zero T
	return zero, false
}

// workload is a pod template and where it comes from.
type workload struct {
	Name      string // Kind/namespace/name
	Namespace string
	Selector  *metav1.LabelSelector // nil for a CronJob
	Template  *corev1.PodTemplateSpec
}

func workloads(objs []object) []workload {
	var out []workload
	for _, d := range all[*appsv1.Deployment](objs) {
		out = append(out, workload{"Deployment/" + d.Namespace + "/" + d.Name, d.Namespace, d.Spec.Selector, &d.Spec.Template})
	}
	for _, s := range all[*appsv1.StatefulSet](objs) {
		out = append(out, workload{"StatefulSet/" + s.Namespace + "/" + s.Name, s.Namespace, s.Spec.Selector, &s.Spec.Template})
	}
	for _, c := range all[*batchv1.CronJob](objs) {
		out = append(out, workload{"CronJob/" + c.Namespace + "/" + c.Name, c.Namespace, nil, &c.Spec.JobTemplate.Spec.Template})
	}
	return out
}

// allContainers returns the init containers and containers of a pod spec.
func allContainers(spec *corev1.PodSpec) []corev1.Container {
	return append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
}

// readmeFlags reads the flag table of the repository README ("Running it for real"): the
// flags it lists and every SYVAULT_* variable named in its rows (SYVAULT_MASTER_KEY sits
// in the meaning column of --master-key-file).
func readmeFlags(tb testing.TB) (flags, envs map[string]bool) {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(tb), "README.md"))
	if err != nil {
		tb.Fatal(err)
	}
	row := regexp.MustCompile("^\\|\\s*`(--[a-z][a-z0-9-]*)`\\s*\\|")
	env := regexp.MustCompile(`\bSYVAULT_[A-Z0-9_]+\b`)
	flags, envs = map[string]bool{}, map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		flags[m[1]] = true
		for _, e := range env.FindAllString(line, -1) {
			envs[e] = true
		}
	}
	if len(flags) < 5 || len(envs) < 5 {
		tb.Fatalf("README.md flag table not found or changed shape: flags %v, env %v", flags, envs)
	}
	return flags, envs
}

// flagsOf returns the --flags among args, without any =value.
func flagsOf(args []string) []string {
	var out []string
	for _, a := range args {
		if strings.HasPrefix(a, "--") {
			name, _, _ := strings.Cut(a, "=")
			out = append(out, name)
		}
	}
	return out
}

// pinned reports whether an image reference names a digest or a tag other than latest.
func pinned(image string) bool {
	if strings.Contains(image, "@sha256:") {
		return true
	}
	i := strings.LastIndex(image, ":")
	if i < 0 || i < strings.LastIndex(image, "/") {
		return false
	}
	tag := image[i+1:]
	return tag != "" && tag != "latest"
}
