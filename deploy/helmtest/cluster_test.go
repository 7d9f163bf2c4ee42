package helmtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// clusterArgs are the flags cluster mode gives `cardinal serve` with the
// chart's default cluster values.
var clusterArgs = []string{
	"--cluster.peers=dns+cardinal-peers.monitoring.svc.cluster.local:9091",
	"--cluster.self=$(POD_IP):9091",
	"--cluster.refresh-interval=15s",
	"--cluster.probe-interval=1s",
	"--cluster.peer-timeout=30s",
	"--cluster.handover-delay=5s",
}

// serveFlags returns the flags of `cardinal serve --help` with their
// defaults, e.g. "cluster.peer-timeout" → "30s".
func serveFlags(t *testing.T) map[string]string {
	t.Helper()
	out, err := exec.Command(cardinalBin, "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("cardinal serve --help: %v\n%s", err, out)
	}
	flags := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if f, ok := strings.CutPrefix(l, "  --"); ok {
			name, def, _ := strings.Cut(f, "=")
			flags[name] = def
		}
	}
	return flags
}

// The flags the chart renders are those of `cardinal serve`, and the
// chart's default cluster values are the binary's defaults.
func TestHelmClusterFlagsExist(t *testing.T) {
	flags := serveFlags(t)
	for _, a := range clusterArgs {
		name, val, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		def, ok := flags[name]
		if !ok {
			t.Errorf("the chart renders --%s, which cardinal serve does not know (flags: %v)", name, flags)
			continue
		}
		if name != "cluster.peers" && name != "cluster.self" && val != def {
			t.Errorf("the chart's default --%s=%s, cardinal's is %s", name, val, def)
		}
	}
}

// clusterFlags returns the --cluster.* arguments of c, in order.
func clusterFlags(c *corev1.Container) []string {
	var out []string
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--cluster.") {
			out = append(out, a)
		}
	}
	return out
}

func envVar(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// checkFieldRefEnv checks that c has env name from the pod's fieldPath.
func checkFieldRefEnv(t *testing.T, where string, c *corev1.Container, name, fieldPath string) {
	t.Helper()
	e := envVar(c, name)
	if e == nil || e.Value != "" || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != fieldPath {
		t.Errorf("%s: env %s is %+v, want it from fieldRef %s", where, name, e, fieldPath)
	}
}

// checkPeersService checks the headless Service the replicas find each
// other through: every pod of the Deployment, ready or not, on its http
// port, under the name --cluster.peers resolves.
func checkPeersService(t *testing.T, objs []object, d *appsv1.Deployment) {
	t.Helper()
	svc := find[corev1.Service](objs, "Service", releaseName+"-peers")
	if svc == nil {
		t.Fatal("no Service " + releaseName + "-peers")
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s: clusterIP %q, want None (headless)", svc.Name, svc.Spec.ClusterIP)
	}
	if !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s: publishNotReadyAddresses is false: replicas would not see peers that are not ready yet", svc.Name)
	}
	if !reflect.DeepEqual(svc.Spec.Selector, d.Spec.Selector.MatchLabels) {
		t.Errorf("Service %s: selector %v, the Deployment's %v", svc.Name, svc.Spec.Selector, d.Spec.Selector.MatchLabels)
	}
	c := cardinalContainer(d.Spec.Template.Spec)
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort != intstr.FromString("http") ||
		svc.Spec.Ports[0].Port != c.Ports[0].ContainerPort || c.Ports[0].Name != "http" {
		t.Errorf("Service %s: ports %+v, want the container's http port %d", svc.Name, svc.Spec.Ports, c.Ports[0].ContainerPort)
	}
}

// Cluster mode with three replicas: the headless Service, the flags and the
// pod IP they name, a PDB that lets one replica go at a time, no warning.
func TestHelmCluster(t *testing.T) {
	helm := helmBinary(t)
	args := []string{"--set", "cluster.enabled=true", "--set", "replicaCount=3"}
	objs := decodeManifests(t, helmTemplate(t, helm, args...))
	d := find[appsv1.Deployment](objs, "Deployment", releaseName)
	if d == nil {
		t.Fatal("no Deployment")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("Deployment replicas %v, want 3", d.Spec.Replicas)
	}
	checkPeersService(t, objs, d)
	c := cardinalContainer(d.Spec.Template.Spec)
	if got := clusterFlags(c); !slices.Equal(got, clusterArgs) {
		t.Errorf("cluster flags:\n got  %q\n want %q", got, clusterArgs)
	}
	// $(POD_IP) in --cluster.self is expanded by the kubelet only if the
	// container has that env.
	checkFieldRefEnv(t, "Deployment", c, "POD_IP", "status.podIP")

	pdb := find[policyv1.PodDisruptionBudget](objs, "PodDisruptionBudget", releaseName)
	if pdb == nil {
		t.Fatal("cluster mode without a PodDisruptionBudget")
	}
	if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) || pdb.Spec.MinAvailable != nil {
		t.Errorf("PodDisruptionBudget: maxUnavailable %v, minAvailable %v, want maxUnavailable 1", pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable)
	}
	if !reflect.DeepEqual(pdb.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels) {
		t.Errorf("PodDisruptionBudget selector %v, the Deployment's %v", pdb.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels)
	}

	notes := renderNotes(t, helm, args...)
	for _, want := range []string{
		"Cluster mode (3 replicas): the replicas run as one, with ownership by\nworkload",
		"headless Service cardinal-peers",
		"/api/v1/cardinality, /api/v1/limits and the explorer page of one pod show that\nreplica's share",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("cluster notes do not say %q:\n%s", want, notes)
		}
	}
	if strings.Contains(notes, "WARNING") {
		t.Errorf("cluster notes warn:\n%s", notes)
	}

	// The values reach the flags; podDisruptionBudget.enabled=false
	// overrides the cluster's default.
	objs = decodeManifests(t, helmTemplate(t, helm, append(args,
		"--set", "fullnameOverride=metrics-gw", "--set", "clusterDomain=k8s.example.internal",
		"--set", "cluster.peerTimeout=1m", "--set", "cluster.probeInterval=500ms",
		"--set", "cluster.refreshInterval=1m30s", "--set", "cluster.handoverDelay=2s",
		"--set", "podDisruptionBudget.enabled=false")...))
	d = find[appsv1.Deployment](objs, "Deployment", "metrics-gw")
	if d == nil {
		t.Fatal("no Deployment metrics-gw")
	}
	want := []string{
		"--cluster.peers=dns+metrics-gw-peers.monitoring.svc.k8s.example.internal:9091",
		"--cluster.self=$(POD_IP):9091",
		"--cluster.refresh-interval=1m30s",
		"--cluster.probe-interval=500ms",
		"--cluster.peer-timeout=1m",
		"--cluster.handover-delay=2s",
	}
	if got := clusterFlags(cardinalContainer(d.Spec.Template.Spec)); !slices.Equal(got, want) {
		t.Errorf("cluster flags:\n got  %q\n want %q", got, want)
	}
	if find[corev1.Service](objs, "Service", "metrics-gw-peers") == nil {
		t.Error("no Service metrics-gw-peers")
	}
	if find[policyv1.PodDisruptionBudget](objs, "PodDisruptionBudget", "metrics-gw") != nil {
		t.Error("podDisruptionBudget.enabled=false rendered a PodDisruptionBudget")
	}
}

// Autoscaling in cluster mode: the HPA, the cluster, no warning.
func TestHelmClusterAutoscaling(t *testing.T) {
	helm := helmBinary(t)
	args := []string{"--set", "cluster.enabled=true", "--set", "autoscaling.enabled=true"}
	objs := decodeManifests(t, helmTemplate(t, helm, args...))
	d := find[appsv1.Deployment](objs, "Deployment", releaseName)
	if d == nil {
		t.Fatal("no Deployment")
	}
	if d.Spec.Replicas != nil {
		t.Errorf("Deployment replicas %d with autoscaling: the HPA owns the count", *d.Spec.Replicas)
	}
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.kind+"/"+o.name)
	}
	for _, want := range []string{"HorizontalPodAutoscaler/cardinal", "PodDisruptionBudget/cardinal", "Service/cardinal-peers"} {
		if !slices.Contains(kinds, want) {
			t.Errorf("no %s in %v", want, kinds)
		}
	}
	checkPeersService(t, objs, d)
	if got := clusterFlags(cardinalContainer(d.Spec.Template.Spec)); !slices.Equal(got, clusterArgs) {
		t.Errorf("cluster flags:\n got  %q\n want %q", got, clusterArgs)
	}
	notes := renderNotes(t, helm, args...)
	if strings.Contains(notes, "WARNING") || !strings.Contains(notes, "Cluster mode (2 to 5 replicas (HPA))") {
		t.Errorf("notes of autoscaling in cluster mode warn, or do not say the tier's size:\n%s", notes)
	}
}

// Several replicas without cluster mode still warn, and render nothing of
// the cluster.
func TestHelmReplicasWithoutClusterWarn(t *testing.T) {
	helm := helmBinary(t)
	for _, set := range []string{"replicaCount=2", "autoscaling.enabled=true"} {
		t.Run(set, func(t *testing.T) {
			notes := renderNotes(t, helm, "--set", set)
			if !strings.Contains(notes, "WARNING: more than one replica without cluster.enabled") ||
				!strings.Contains(notes, "Set cluster.enabled=true") || strings.Contains(notes, "Cluster mode") {
				t.Errorf("notes with --set %s do not warn about replicas without the cluster:\n%s", set, notes)
			}
			objs := decodeManifests(t, helmTemplate(t, helm, "--set", set))
			if find[corev1.Service](objs, "Service", releaseName+"-peers") != nil {
				t.Error("a peers Service without cluster.enabled")
			}
			if find[policyv1.PodDisruptionBudget](objs, "PodDisruptionBudget", releaseName) != nil {
				t.Error("a PodDisruptionBudget without cluster.enabled or podDisruptionBudget.enabled")
			}
			d := find[appsv1.Deployment](objs, "Deployment", releaseName)
			c := cardinalContainer(d.Spec.Template.Spec)
			if f := clusterFlags(c); len(f) != 0 || envVar(c, "POD_IP") != nil {
				t.Errorf("cluster flags %q or env POD_IP without cluster.enabled", f)
			}
		})
	}
	// One replica in cluster mode, or autoscaling up to one: no warning.
	for _, set := range []string{"cluster.enabled=true", "autoscaling.enabled=true,autoscaling.minReplicas=1,autoscaling.maxReplicas=1"} {
		if notes := renderNotes(t, helm, "--set", set); strings.Contains(notes, "WARNING") {
			t.Errorf("notes with --set %s warn:\n%s", set, notes)
		}
	}
}

// helmTemplateError runs helm template, which must fail, and returns its
// output.
func helmTemplateError(t *testing.T, helm string, args ...string) string {
	t.Helper()
	cmd := exec.Command(helm, append([]string{"template", releaseName, chartDir, "--namespace", namespace}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(t.TempDir(), "kubeconfig"))
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Errorf("helm template %s succeeded, want an error", strings.Join(args, " "))
	}
	return string(out)
}

// A ReadWriteOnce volume (and one state file) cannot serve several pods:
// persistence with more than one replica is refused with a message that
// says so, in cluster mode or not.
func TestHelmPersistenceNeedsOneReplica(t *testing.T) {
	helm := helmBinary(t)
	const msg = "persistence.enabled needs a single replica"
	for _, set := range []string{
		"persistence.enabled=true,replicaCount=2",
		"persistence.enabled=true,cluster.enabled=true,replicaCount=3",
		"persistence.enabled=true,autoscaling.enabled=true",
		"persistence.enabled=true,persistence.existingClaim=state,cluster.enabled=true,autoscaling.enabled=true",
	} {
		if out := helmTemplateError(t, helm, "--set", set); !strings.Contains(out, msg) {
			t.Errorf("--set %s: error %q does not say %q", set, out, msg)
		}
	}
	// One replica keeps its volume, in cluster mode too; without the state
	// file there is no volume to share.
	for _, set := range []string{
		"persistence.enabled=true,cluster.enabled=true",
		"persistence.enabled=true,replicaCount=3,admin.stateFile.enabled=false",
	} {
		objs := decodeManifests(t, helmTemplate(t, helm, "--set", set))
		pvc := find[corev1.PersistentVolumeClaim](objs, "PersistentVolumeClaim", releaseName)
		if strings.Contains(set, "stateFile.enabled=false") != (pvc == nil) {
			t.Errorf("--set %s: PersistentVolumeClaim %v", set, pvc != nil)
		}
	}
}

// Sidecar mode has no Deployment of Cardinal replicas to form a cluster:
// cluster.enabled there is refused, not silently ignored.
func TestHelmClusterRefusedInSidecarMode(t *testing.T) {
	helm := helmBinary(t)
	out := helmTemplateError(t, helm, "--values", filepath.Join(helmExDir, "sidecar.values.yaml"), "--set", "cluster.enabled=true")
	if !strings.Contains(out, "cluster.enabled is for mode: standalone") || !strings.Contains(out, "extraArgs") {
		t.Errorf("error %q does not say cluster.enabled is for standalone mode", out)
	}
}

// The chart README documents every value the schema knows, the cluster's
// among them.
func TestHelmReadmeDocumentsClusterValues(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"`cluster.enabled`", "`cluster.peerTimeout`", "`cluster.probeInterval`", "`cluster.refreshInterval`",
		"`cluster.handoverDelay`", "`clusterDomain`", "`sidecar.shardLabel`"} {
		if !bytes.Contains(readme, []byte("| "+key+" |")) {
			t.Errorf("the chart README's values table has no row for %s", key)
		}
	}
}
