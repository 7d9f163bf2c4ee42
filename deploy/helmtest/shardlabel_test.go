package helmtest

import (
	"path/filepath"
	"reflect"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// renderedExternalLabels returns external_labels of the cardinal.yml the
// ConfigMap holds (nil without the key).
func renderedExternalLabels(t *testing.T, objs []object) map[string]string {
	t.Helper()
	cm := find[corev1.ConfigMap](objs, "ConfigMap", releaseName)
	if cm == nil {
		t.Fatal("no ConfigMap " + releaseName)
	}
	var cfg struct {
		ExternalLabels map[string]string `json:"external_labels"`
	}
	if err := sigsyaml.Unmarshal([]byte(cm.Data["cardinal.yml"]), &cfg); err != nil {
		t.Fatalf("cardinal.yml: %v", err)
	}
	return cfg.ExternalLabels
}

// Sharded Prometheus: each sidecar labels its outputs with its pod's name,
// so two shards' sidecars do not emit the same merged series with partial
// sums. The label is in cardinal.yml, and POD_NAME in every Cardinal
// container the chart renders or prints.
func TestHelmSidecarShardLabel(t *testing.T) {
	helm := helmBinary(t)
	values := filepath.Join(helmExDir, "sidecar.values.yaml")
	render := func(set ...string) ([]object, *corev1.Container) {
		t.Helper()
		args := []string{"--values", values, "--set", "admin.token=0123456789abcdef0123456789abcdef", "--set", "sidecar.prometheusDeployment.enabled=true"}
		for _, s := range set {
			args = append(args, "--set", s)
		}
		objs := decodeManifests(t, helmTemplate(t, helm, args...))
		d := find[appsv1.Deployment](objs, "Deployment", releaseName+"-prometheus")
		if d == nil {
			t.Fatal("no example Prometheus Deployment")
		}
		return objs, cardinalContainer(d.Spec.Template.Spec)
	}

	objs, c := render()
	if got, want := renderedExternalLabels(t, objs), map[string]string{"cardinal_shard": "${POD_NAME}"}; !reflect.DeepEqual(got, want) {
		t.Errorf("external_labels %v, want %v", got, want)
	}
	checkFieldRefEnv(t, "example Prometheus", c, "POD_NAME", "metadata.name")

	// The container the notes print (and the kube-prometheus-stack example).
	notes := renderNotes(t, helm, "--values", values)
	var kps kpsValues
	if err := sigsyaml.UnmarshalStrict([]byte(snippet(t, notes, "With kube-prometheus-stack")), &kps); err != nil {
		t.Fatal(err)
	}
	if cs := kps.Prometheus.PrometheusSpec.Containers; len(cs) == 1 {
		checkFieldRefEnv(t, "notes", &cs[0], "POD_NAME", "metadata.name")
	}

	// Another label name; config.external_labels is kept and wins.
	objs, _ = render("sidecar.shardLabel=shard",
		"config.external_labels.cluster=eu-1", "config.external_labels.shard=${SHARD}")
	if got, want := renderedExternalLabels(t, objs), map[string]string{"cluster": "eu-1", "shard": "${SHARD}"}; !reflect.DeepEqual(got, want) {
		t.Errorf("external_labels %v, want %v", got, want)
	}
	objs, _ = render("sidecar.shardLabel=shard", "config.external_labels.cluster=eu-1")
	if got, want := renderedExternalLabels(t, objs), map[string]string{"cluster": "eu-1", "shard": "${POD_NAME}"}; !reflect.DeepEqual(got, want) {
		t.Errorf("external_labels %v, want %v", got, want)
	}

	// "" turns it off.
	objs, c = render("sidecar.shardLabel=")
	if got := renderedExternalLabels(t, objs); got != nil {
		t.Errorf("external_labels %v with sidecar.shardLabel empty", got)
	}
	if e := envVar(c, "POD_NAME"); e != nil {
		t.Errorf("env POD_NAME %+v with sidecar.shardLabel empty", e)
	}
}

// The shard label is a sidecar matter: a standalone Cardinal receives from
// many senders and adds none.
func TestHelmStandaloneHasNoShardLabel(t *testing.T) {
	helm := helmBinary(t)
	objs := decodeManifests(t, helmTemplate(t, helm))
	if got := renderedExternalLabels(t, objs); got != nil {
		t.Errorf("standalone external_labels %v, want none", got)
	}
	d := find[appsv1.Deployment](objs, "Deployment", releaseName)
	if e := envVar(cardinalContainer(d.Spec.Template.Spec), "POD_NAME"); e != nil {
		t.Errorf("standalone env POD_NAME %+v", e)
	}
}
