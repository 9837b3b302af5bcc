package deploytest

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
)

// TestNATS_Config parses the ConfigMap's nats.conf with the nats-server the service embeds
// and checks it against the StatefulSet that mounts it: JetStream on the PVC, and one
// route to each of the three pods by its stable DNS name.
func TestNATS_Config(t *testing.T) {
	objs := MustLoadManifests(t)
	sts, ok := find[*appsv1.StatefulSet](objs, syvaultNamespace, "nats")
	if !ok {
		t.Fatal("no StatefulSet syvault/nats")
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Fatalf("nats replicas %v, want 3", sts.Spec.Replicas)
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy %q: with OrderedReady the first server waits for a quorum that never starts", sts.Spec.PodManagementPolicy)
	}
	headless, _ := find[*corev1.Service](objs, syvaultNamespace, sts.Spec.ServiceName)
	if headless == nil || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("headless Service %q must publishNotReadyAddresses so routes resolve before a quorum", sts.Spec.ServiceName)
	}
	if pdb, ok := find[*policyv1.PodDisruptionBudget](objs, syvaultNamespace, "nats"); !ok || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Error("want PodDisruptionBudget nats with maxUnavailable 1")
	}
	client, ok := find[*corev1.Service](objs, syvaultNamespace, "nats")
	if !ok || len(client.Spec.Ports) != 1 || client.Spec.Ports[0].Port != 4222 {
		t.Error("want Service nats with the client port 4222 alone")
	}

	spec := sts.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("nats: %d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	// The config file the container runs with, and the ConfigMap key behind it.
	confPath := argValue(append(append([]string{}, c.Command...), c.Args...), "--config")
	if confPath == "" {
		t.Fatalf("nats container runs %q %q without --config", c.Command, c.Args)
	}
	var cmName, cmKey string
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(confPath, m.MountPath+"/") {
			for _, v := range spec.Volumes {
				if v.Name == m.Name && v.ConfigMap != nil {
					cmName, cmKey = v.ConfigMap.Name, strings.TrimPrefix(confPath, m.MountPath+"/")
				}
			}
		}
	}
	cm, ok := find[*corev1.ConfigMap](objs, syvaultNamespace, cmName)
	if !ok || cm.Data[cmKey] == "" {
		t.Fatalf("--config %s: no ConfigMap key behind it (ConfigMap %q key %q)", confPath, cmName, cmKey)
	}
	conf := cm.Data[cmKey]
	for _, word := range []string{"jetstream", "routes", "cluster"} {
		if !strings.Contains(conf, word) {
			t.Errorf("nats.conf does not mention %s", word)
		}
	}

	// The routes' credentials come from key routes.conf of Secret syvault-nats, included
	// from its mount: a file made as deploy/README.md says stands in for it here, and the
	// manifests' placeholder must keep the server from starting.
	// The client nkey comes from Secret syvault-nats; a real one stands in for it here.
	kp, _ := nkeys.CreateUser()
	userKey, _ := kp.PublicKey()
	nkeyFromSecret := false
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name" {
			t.Setenv(e.Name, sts.Name+"-0")
		}
		if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil && r.SecretKeyRef.Name == "syvault-nats" && r.SecretKeyRef.Key == "nkey-public" {
			t.Setenv(e.Name, userKey)
			nkeyFromSecret = true
		}
	}
	if !nkeyFromSecret {
		t.Error("the nats container does not read the client nkey from Secret syvault-nats (key nkey-public)")
	}
	// The container's mounts, under a temporary root: NATS reads an include relative to
	// the file that names it.
	root := t.TempDir()
	routesFile := routesInclude(t, conf, confPath, c, spec)
	const routePassword = "0123456789abcdef0123456789abcdef"
	var routesConf strings.Builder
	fmt.Fprintf(&routesConf, "authorization { user: route, password: %q }\nroutes: [\n", routePassword)
	for i := range 3 {
		fmt.Fprintf(&routesConf, "  nats://route:%s@%s-%d.%s.%s.svc.cluster.local:6222\n", routePassword, sts.Name, i, sts.Spec.ServiceName, syvaultNamespace)
	}
	routesConf.WriteString("]\n")
	placeholder, ok := find[*corev1.Secret](objs, syvaultNamespace, "syvault-nats")
	if !ok || placeholder.StringData["routes.conf"] == "" {
		t.Fatal("Secret syvault-nats has no placeholder for routes.conf")
	}
	file := filepath.Join(root, confPath)
	for _, p := range []string{file, filepath.Join(root, routesFile)} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, routesFile), []byte(placeholder.StringData["routes.conf"]), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := server.ProcessConfigFile(file); err == nil {
		t.Error("nats.conf parses with the placeholder routes.conf: NATS would start with routes anyone may join")
	}
	if err := os.WriteFile(filepath.Join(root, routesFile), []byte(routesConf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("nats.conf does not parse: %v", err)
	}
	// Whoever may publish to the event stream controls SyVault: NATS must admit no one
	// but the holder of that nkey.
	if len(opts.Nkeys) != 1 || opts.Nkeys[0].Nkey != userKey || len(opts.Users) != 0 || opts.NoAuthUser != "" || opts.Authorization != "" {
		t.Errorf("nats.conf authorization: nkeys %v, users %d, no_auth_user %q: want exactly the nkey of Secret syvault-nats",
			opts.Nkeys, len(opts.Users), opts.NoAuthUser)
	}
	if opts.ServerName != sts.Name+"-0" {
		t.Errorf("server_name %q, want the pod's name %s-0 (a JetStream cluster needs unique names)", opts.ServerName, sts.Name)
	}
	if !opts.JetStream {
		t.Error("nats.conf does not enable jetstream")
	}
	if opts.Port != 4222 || opts.Cluster.Port != 6222 || opts.HTTPPort != 8222 {
		t.Errorf("ports client %d cluster %d monitor %d, want 4222 6222 8222", opts.Port, opts.Cluster.Port, opts.HTTPPort)
	}
	if opts.Cluster.Name == "" {
		t.Error("cluster has no name")
	}
	onPVC := false
	for _, m := range c.VolumeMounts {
		for _, pvc := range sts.Spec.VolumeClaimTemplates {
			if m.Name == pvc.Name && (opts.StoreDir == m.MountPath || strings.HasPrefix(opts.StoreDir, m.MountPath+"/")) {
				onPVC = true
			}
		}
	}
	if !onPVC {
		t.Errorf("jetstream store_dir %q is not on a volumeClaimTemplate's mount", opts.StoreDir)
	}
	if opts.JetStreamMaxStore <= 0 {
		t.Error("jetstream max_file_store is not set: the store could fill its volume")
	} else {
		for _, pvc := range sts.Spec.VolumeClaimTemplates {
			if size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; !size.IsZero() && opts.JetStreamMaxStore >= size.Value() {
				t.Errorf("max_file_store %d is not below the %s volume", opts.JetStreamMaxStore, size.String())
			}
		}
	}
	// A server that joins on 6222 sees and publishes everything: routes must
	// authenticate, with the password every configured route carries.
	if opts.Cluster.Username == "" || opts.Cluster.Password != routePassword {
		t.Errorf("cluster authorization user %q: want the route user and password of routes.conf", opts.Cluster.Username)
	}
	var routes []string
	for _, r := range opts.Routes {
		routes = append(routes, r.Host)
		if pw, _ := r.User.Password(); r.User == nil || pw != routePassword {
			t.Errorf("route %s carries no route password", r.Host)
		}
	}
	var want []string
	for i := range 3 {
		want = append(want, fmt.Sprintf("%s-%d.%s.%s.svc.cluster.local:6222", sts.Name, i, sts.Spec.ServiceName, syvaultNamespace))
	}
	if !slices.Equal(routes, want) {
		t.Errorf("routes %q, want %q", routes, want)
	}
	if opts.PidFile != "" {
		mounted := false
		for _, m := range c.VolumeMounts {
			mounted = mounted || path.Dir(opts.PidFile) == m.MountPath
		}
		if !mounted {
			t.Errorf("pid_file %s is not on a mounted (writable) volume", opts.PidFile)
		}
	}
	if opts.LameDuckDuration > 0 && spec.TerminationGracePeriodSeconds != nil {
		if need := opts.LameDuckDuration + opts.LameDuckGracePeriod; int64(need.Seconds()) >= *spec.TerminationGracePeriodSeconds {
			t.Errorf("lame duck takes %s, terminationGracePeriodSeconds is %d", need, *spec.TerminationGracePeriodSeconds)
		}
	}
}

// routesInclude returns the path nats.conf (at confPath) includes the routes'
// credentials from, and checks that it is key routes.conf of Secret syvault-nats,
// mounted in the container.
func routesInclude(t *testing.T, conf, confPath string, c corev1.Container, spec corev1.PodSpec) string {
	t.Helper()
	var inc string
	for _, line := range strings.Split(conf, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "include" && strings.HasSuffix(f[1], "routes.conf") {
			inc = path.Join(path.Dir(confPath), f[1])
		}
	}
	if inc == "" {
		t.Fatal("nats.conf includes no routes.conf: routes would admit any server")
	}
	for _, m := range c.VolumeMounts {
		if !strings.HasPrefix(inc, m.MountPath+"/") {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name || v.Secret == nil || v.Secret.SecretName != "syvault-nats" {
				continue
			}
			for _, it := range v.Secret.Items {
				if it.Key == "routes.conf" && m.MountPath+"/"+it.Path == inc {
					return inc
				}
			}
		}
	}
	t.Fatalf("nats.conf includes %s, which is not key routes.conf of Secret syvault-nats mounted in the container", inc)
	return ""
}

// TestSyvault_NATSCredentials: every syvault container joins NATS with the nkey seed of
// Secret syvault-nats, mounted as the file SYVAULT_NATS_CREDS names.
func TestSyvault_NATSCredentials(t *testing.T) {
	objs := MustLoadManifests(t)
	for _, name := range []string{"syvault-api", "syvault-workers"} {
		d, ok := find[*appsv1.Deployment](objs, syvaultNamespace, name)
		if !ok {
			t.Fatalf("no Deployment %s", name)
		}
		spec := d.Spec.Template.Spec
		c := spec.Containers[0]
		var creds string
		for _, e := range c.Env {
			if e.Name == "SYVAULT_NATS_CREDS" {
				creds = e.Value
			}
		}
		if creds == "" {
			t.Errorf("%s: no SYVAULT_NATS_CREDS", name)
			continue
		}
		found := false
		for _, m := range c.VolumeMounts {
			if path.Dir(creds) != m.MountPath {
				continue
			}
			for _, v := range spec.Volumes {
				if v.Name != m.Name || v.Secret == nil || v.Secret.SecretName != "syvault-nats" {
					continue
				}
				for _, it := range v.Secret.Items {
					found = found || (it.Key == "nkey-seed" && it.Path == path.Base(creds))
				}
				if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0 {
					t.Errorf("%s: the nkey seed is readable by others (defaultMode %v)", name, v.Secret.DefaultMode)
				}
			}
		}
		if !found {
			t.Errorf("%s: SYVAULT_NATS_CREDS %s is not the nkey-seed of Secret syvault-nats", name, creds)
		}
	}
}
