package helmtest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// The canonical dashboard and rules; the chart holds copies in files/.
const (
	dashboardJSON = "../grafana/cardinal.json"
	alertRules    = "../alerts/cardinal.rules.yml"
)

// prometheusRule is monitoring.coreos.com/v1 PrometheusRule with the fields
// of its rule groups; strict decoding refuses any other field.
type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []ruleGroup `json:"groups"`
	} `json:"spec"`
}

type ruleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []struct {
		Alert       string            `json:"alert,omitempty"`
		Record      string            `json:"record,omitempty"`
		Expr        string            `json:"expr"`
		For         string            `json:"for,omitempty"`
		Labels      map[string]string `json:"labels,omitempty"`
		Annotations map[string]string `json:"annotations,omitempty"`
	} `json:"rules"`
}

// renderMonitoring renders the chart and decodes every manifest strictly,
// PrometheusRules included (decodeManifests knows no PrometheusRule). It
// returns the objects by "Kind/name" and the namespace of each.
func renderMonitoring(t *testing.T, helm string, args ...string) (map[string]any, map[string]string) {
	t.Helper()
	objs, nss := map[string]any{}, map[string]string{}
	for i, doc := range splitDocuments(helmTemplate(t, helm, args...)) {
		var meta struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        metav1.ObjectMeta `json:"metadata"`
		}
		if err := sigsyaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("document %d is not YAML: %v\n%s", i, err, doc)
		}
		var obj any
		if meta.APIVersion == "monitoring.coreos.com/v1" && meta.Kind == "PrometheusRule" {
			obj = &prometheusRule{}
		} else if obj = newObject(meta.APIVersion, meta.Kind); obj == nil {
			t.Fatalf("document %d: unexpected %s %s\n%s", i, meta.APIVersion, meta.Kind, doc)
		}
		if err := sigsyaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("document %d (%s %s): strict decoding: %v\n%s", i, meta.Kind, meta.Metadata.Name, err, doc)
		}
		key := meta.Kind + "/" + meta.Metadata.Name
		if _, dup := objs[key]; dup {
			t.Fatalf("%s rendered twice", key)
		}
		objs[key], nss[key] = obj, meta.Metadata.Namespace
	}
	return objs, nss
}

// TestHelmMonitoringOffByDefault: neither the dashboard nor the rules are
// rendered unless asked for (their CRD or sidecar may not exist).
func TestHelmMonitoringOffByDefault(t *testing.T) {
	helm := helmBinary(t)
	for _, args := range [][]string{nil, {"--values", filepath.Join(helmExDir, "sidecar.values.yaml"), "--set", "admin.token=0123456789abcdef0123456789abcdef"}} {
		objs, _ := renderMonitoring(t, helm, args...)
		for key, obj := range objs {
			if _, ok := obj.(*prometheusRule); ok {
				t.Errorf("%v: %s rendered with prometheusRule.enabled false", args, key)
			}
			if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Labels["grafana_dashboard"] != "" {
				t.Errorf("%v: %s rendered with grafanaDashboard.enabled false", args, key)
			}
		}
	}
}

// TestHelmMonitoring renders the chart with the dashboard and the rules on,
// in both modes, and checks that the ConfigMap holds the canonical
// dashboard byte for byte under the sidecar's label, and that the
// PrometheusRule's groups are the rules file's.
func TestHelmMonitoring(t *testing.T) {
	helm := helmBinary(t)
	wantDashboard, err := os.ReadFile(dashboardJSON)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(wantDashboard) {
		t.Fatalf("%s is not JSON", dashboardJSON)
	}
	rulesRaw, err := os.ReadFile(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	var wantRules struct {
		Groups []ruleGroup `json:"groups"`
	}
	if err := sigsyaml.UnmarshalStrict(rulesRaw, &wantRules); err != nil {
		t.Fatalf("%s: %v", alertRules, err)
	}
	// The same, as untyped values: nothing the typed decoding might drop.
	var wantGeneric map[string]any
	if err := sigsyaml.Unmarshal(rulesRaw, &wantGeneric); err != nil {
		t.Fatal(err)
	}
	if len(wantRules.Groups) == 0 {
		t.Fatalf("%s has no groups", alertRules)
	}

	for _, tc := range []struct {
		name             string
		args             []string
		label, value, ns string
		annotations      map[string]string
		ruleLabels       map[string]string
	}{
		{
			name:  "standalone",
			args:  []string{"--set", "grafanaDashboard.enabled=true,prometheusRule.enabled=true,prometheusRule.additionalLabels.release=kube-prometheus-stack"},
			label: "grafana_dashboard", value: "1", ns: namespace,
			ruleLabels: map[string]string{"release": "kube-prometheus-stack"},
		},
		{
			name: "sidecar",
			args: []string{"--values", filepath.Join(helmExDir, "sidecar.values.yaml"),
				"--set", "admin.token=0123456789abcdef0123456789abcdef",
				"--set", "grafanaDashboard.enabled=true,prometheusRule.enabled=true",
				"--set", "grafanaDashboard.label=example.com/dashboard,grafanaDashboard.labelValue=cardinal",
				"--set", "grafanaDashboard.namespace=grafana,grafanaDashboard.annotations.grafana_folder=Mesh"},
			label: "example.com/dashboard", value: "cardinal", ns: "grafana",
			annotations: map[string]string{"grafana_folder": "Mesh"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := runHelm(t, helm, append([]string{"lint", "--strict", chartDir, "--namespace", namespace}, tc.args...)...)
			if !bytes.Contains(out, []byte("0 chart(s) failed")) {
				t.Errorf("helm lint output:\n%s", out)
			}
			objs, nss := renderMonitoring(t, helm, tc.args...)

			key := "ConfigMap/" + releaseName + "-dashboard"
			cm, ok := objs[key].(*corev1.ConfigMap)
			if !ok {
				t.Fatalf("no %s among %v", key, keys(objs))
			}
			if nss[key] != tc.ns {
				t.Errorf("%s: namespace %q, want %q", key, nss[key], tc.ns)
			}
			if got := cm.Labels[tc.label]; got != tc.value {
				t.Errorf("%s: label %s=%q, want %q (labels %v)", key, tc.label, got, tc.value, cm.Labels)
			}
			if cm.Labels["app.kubernetes.io/instance"] != releaseName {
				t.Errorf("%s: no chart labels: %v", key, cm.Labels)
			}
			for k, v := range tc.annotations {
				if cm.Annotations[k] != v {
					t.Errorf("%s: annotation %s=%q, want %q", key, k, cm.Annotations[k], v)
				}
			}
			if len(cm.Data) != 1 {
				t.Errorf("%s: data keys %v, want cardinal.json only", key, keys(cm.Data))
			}
			if got := cm.Data["cardinal.json"]; got != string(wantDashboard) {
				t.Errorf("%s: cardinal.json (%d bytes) is not %s (%d bytes) byte for byte", key, len(got), dashboardJSON, len(wantDashboard))
			}

			key = "PrometheusRule/" + releaseName
			pr, ok := objs[key].(*prometheusRule)
			if !ok {
				t.Fatalf("no %s among %v", key, keys(objs))
			}
			if pr.APIVersion != "monitoring.coreos.com/v1" || nss[key] != namespace {
				t.Errorf("%s: apiVersion %q namespace %q", key, pr.APIVersion, nss[key])
			}
			for k, v := range tc.ruleLabels {
				if pr.Labels[k] != v {
					t.Errorf("%s: label %s=%q, want %q (labels %v)", key, k, pr.Labels[k], v, pr.Labels)
				}
			}
			if pr.Labels["app.kubernetes.io/instance"] != releaseName {
				t.Errorf("%s: no chart labels: %v", key, pr.Labels)
			}
			if !reflect.DeepEqual(pr.Spec.Groups, wantRules.Groups) {
				t.Errorf("%s: groups differ from %s:\n got %+v\nwant %+v", key, alertRules, pr.Spec.Groups, wantRules.Groups)
			}
			// Untyped too: the rendered spec is exactly the file's
			// top level (groups and nothing else).
			var generic struct {
				Spec map[string]any `json:"spec"`
			}
			doc, err := sigsyaml.Marshal(pr)
			if err != nil {
				t.Fatal(err)
			}
			if err := sigsyaml.Unmarshal(doc, &generic); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(generic.Spec, wantGeneric) {
				t.Errorf("%s: spec differs from %s as a whole", key, alertRules)
			}
		})
	}
}

// TestHelmMonitoringSchemaRejects: values.schema.json catches mistakes in
// the new values.
func TestHelmMonitoringSchemaRejects(t *testing.T) {
	helm := helmBinary(t)
	for _, tc := range []struct{ set, wantErr string }{
		{"grafanaDashboard.enabled=yes", "enabled"},
		{"grafanaDashboard.bogus=1", "bogus"},
		{"grafanaDashboard.label=not a label", "label"},
		{"grafanaDashboard.namespace=Not_A_Namespace", "namespace"},
		{"prometheusRule.enabled=1", "enabled"},
		{"prometheusRule.additionalLabels.release=1", "release"},
		{"prometheusRule.labels.release=x", "labels"},
	} {
		cmd := exec.Command(helm, "template", releaseName, chartDir, "--set", tc.set)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(t.TempDir(), "kubeconfig"))
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("--set %s: helm template succeeded, want a schema error", tc.set)
			continue
		}
		if !strings.Contains(string(out), tc.wantErr) {
			t.Errorf("--set %s: error %q does not mention %q", tc.set, out, tc.wantErr)
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
