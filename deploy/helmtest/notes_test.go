package helmtest

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// renderNotes renders templates/NOTES.txt, which helm template leaves out:
// it copies the chart and adds a template that runs the notes through tpl
// into a ConfigMap.
func renderNotes(t *testing.T, helm string, args ...string) string {
	t.Helper()
	chart := filepath.Join(t.TempDir(), "cardinal")
	if err := os.CopyFS(chart, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	notes, err := os.ReadFile(filepath.Join(chart, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(chart, "notes-render.txt"), notes, 0o644); err != nil {
		t.Fatal(err)
	}
	const tmpl = `apiVersion: v1
kind: ConfigMap
metadata:
  name: notes-render
  namespace: {{ .Release.Namespace }}
data:
  notes: {{ tpl (.Files.Get "notes-render.txt") . | quote }}
`
	if err := os.WriteFile(filepath.Join(chart, "templates", "zz-notes-render.yaml"), []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"template", releaseName, chart, "--namespace", namespace, "--kube-version", "1.30.0",
		"--show-only", "templates/zz-notes-render.yaml"}
	objs := decodeManifests(t, runHelm(t, helm, append(base, args...)...))
	cm := find[corev1.ConfigMap](objs, "ConfigMap", "notes-render")
	if cm == nil {
		t.Fatal("notes were not rendered")
	}
	return cm.Data["notes"]
}

// kpsValues is the part of kube-prometheus-stack's values that the sidecar
// snippet sets; strict decoding refuses anything else.
type kpsValues struct {
	Prometheus struct {
		PrometheusSpec struct {
			RemoteWrite []struct {
				URL string `json:"url"`
			} `json:"remoteWrite"`
			Containers []corev1.Container `json:"containers"`
			Volumes    []corev1.Volume    `json:"volumes"`
		} `json:"prometheusSpec"`
	} `json:"prometheus"`
}

// snippet returns the YAML block that follows the line starting with
// header, up to the next blank line, dedented.
func snippet(t *testing.T, notes, header string) string {
	t.Helper()
	lines := strings.Split(notes, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, header) {
			continue
		}
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		var block []string
		for ; j < len(lines) && strings.TrimSpace(lines[j]) != ""; j++ {
			block = append(block, strings.TrimPrefix(lines[j], "  "))
		}
		return strings.Join(block, "\n") + "\n"
	}
	t.Fatalf("no %q in the notes:\n%s", header, notes)
	return ""
}

func TestHelmNotesStandalone(t *testing.T) {
	helm := helmBinary(t)
	notes := renderNotes(t, helm)
	want := "- url: http://cardinal.monitoring.svc:9091/api/v1/write"
	if !strings.Contains(notes, want) || strings.Contains(notes, "WARNING") {
		t.Errorf("notes do not say %q, or warn:\n%s", want, notes)
	}
	var rw struct {
		RemoteWrite []struct {
			URL string `json:"url"`
		} `json:"remote_write"`
	}
	if err := sigsyaml.UnmarshalStrict([]byte(snippet(t, notes, "Point your Prometheus")), &rw); err != nil {
		t.Errorf("remote_write snippet: %v", err)
	}
	// Autoscaling in cluster mode: no warning (TestHelmReplicasWithoutClusterWarn
	// has the cases that warn).
	notes = renderNotes(t, helm, "--values", "testdata/standalone-full.values.yaml")
	if strings.Contains(notes, "WARNING") || !strings.Contains(notes, "Cluster mode (2 to 4 replicas (HPA))") {
		t.Errorf("notes with autoscaling in cluster mode warn, or do not say the tier's size:\n%s", notes)
	}
}

// TestHelmNotesSidecar checks the container snippet the sidecar notes print:
// it must decode strictly into kube-prometheus-stack's values, be the
// container the tested example Deployment runs, and match
// deploy/helm/examples/kube-prometheus-stack.values.yaml.
func TestHelmNotesSidecar(t *testing.T) {
	helm := helmBinary(t)
	values := filepath.Join(helmExDir, "sidecar.values.yaml")
	notes := renderNotes(t, helm, "--values", values)
	block := snippet(t, notes, "With kube-prometheus-stack")
	var got kpsValues
	if err := sigsyaml.UnmarshalStrict([]byte(block), &got); err != nil {
		t.Fatalf("kube-prometheus-stack snippet: %v\n%s", err, block)
	}
	spec := got.Prometheus.PrometheusSpec
	if len(spec.RemoteWrite) != 1 || spec.RemoteWrite[0].URL != "http://127.0.0.1:9091/api/v1/write" {
		t.Errorf("remoteWrite %+v, want http://127.0.0.1:9091/api/v1/write", spec.RemoteWrite)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers in the snippet, want 1", len(spec.Containers))
	}

	// The same container and volumes as in the example Prometheus Deployment,
	// whose config paths TestHelmTemplate checks.
	objs := decodeManifests(t, helmTemplate(t, helm, "--values", values, "--set", "sidecar.prometheusDeployment.enabled=true"))
	d := find[appsv1.Deployment](objs, "Deployment", releaseName+"-prometheus")
	if d == nil {
		t.Fatal("no example Prometheus Deployment")
	}
	if c := cardinalContainer(d.Spec.Template.Spec); c == nil || !reflect.DeepEqual(*c, spec.Containers[0]) {
		t.Errorf("the notes' container differs from the example Deployment's:\nnotes: %+v\ndeployment: %+v", spec.Containers[0], c)
	}
	for _, v := range spec.Volumes {
		found := false
		for _, dv := range d.Spec.Template.Spec.Volumes {
			found = found || reflect.DeepEqual(v, dv)
		}
		if !found {
			t.Errorf("volume %s of the notes is not in the example Deployment", v.Name)
		}
	}
	checkContainer(t, "notes", &spec.Containers[0], corev1.PodSpec{Volumes: spec.Volumes})

	example := filepath.Join(helmExDir, "kube-prometheus-stack.values.yaml")
	if *update {
		header := "# kube-prometheus-stack values that run Cardinal next to Prometheus. Generated\n" +
			"# from the chart's NOTES with deploy/helm/examples/sidecar.values.yaml and the\n" +
			"# release name \"cardinal\" (go test ./deploy/helmtest/ -update); install the\n" +
			"# Cardinal chart with those values in the same namespace first.\n"
		if err := os.WriteFile(example, []byte(header+block), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	var want kpsValues
	if err := sigsyaml.UnmarshalStrict(data, &want); err != nil {
		t.Fatalf("%s: %v", example, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s differs from the chart's notes (run with -update after checking the change)", example)
	}
}
