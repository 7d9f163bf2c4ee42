package helmtest

import (
	"bytes"
	"encoding/base64"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v2"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// object is one rendered manifest, decoded into its API type.
type object struct {
	kind, name string
	obj        any
}

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor the
// chart renders; strict decoding refuses any field not listed here.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// podMonitor is the part of monitoring.coreos.com/v1 PodMonitor the chart
// renders in sidecar mode.
type podMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		PodMetricsEndpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// newObject returns an empty object of the API type for apiVersion and kind.
func newObject(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "v1/Service":
		return &corev1.Service{}
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}
	case "v1/PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &serviceMonitor{}
	case "monitoring.coreos.com/v1/PodMonitor":
		return &podMonitor{}
	}
	return nil
}

// splitDocuments splits a multi-document YAML stream at "---" lines and
// drops documents that hold only comments.
func splitDocuments(out []byte) [][]byte {
	var docs [][]byte
	for _, doc := range strings.Split("\n"+string(out), "\n---") {
		doc = strings.TrimPrefix(doc, "\n")
		empty := true
		for _, l := range strings.Split(doc, "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
				empty = false
				break
			}
		}
		if !empty {
			docs = append(docs, []byte(doc))
		}
	}
	return docs
}

// decodeManifests decodes every document strictly (unknown or duplicate
// fields are errors) into its Kubernetes API type.
func decodeManifests(t *testing.T, out []byte) []object {
	t.Helper()
	var objs []object
	for i, doc := range splitDocuments(out) {
		var meta struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        metav1.ObjectMeta `json:"metadata"`
		}
		if err := sigsyaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("document %d is not YAML: %v\n%s", i, err, doc)
		}
		obj := newObject(meta.APIVersion, meta.Kind)
		if obj == nil {
			t.Fatalf("document %d: unexpected %s %s\n%s", i, meta.APIVersion, meta.Kind, doc)
		}
		if err := sigsyaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("document %d (%s %s): strict decoding: %v\n%s", i, meta.Kind, meta.Metadata.Name, err, doc)
		}
		if meta.Metadata.Namespace != namespace {
			t.Errorf("%s/%s: namespace %q, want %q", meta.Kind, meta.Metadata.Name, meta.Metadata.Namespace, namespace)
		}
		objs = append(objs, object{kind: meta.Kind, name: meta.Metadata.Name, obj: obj})
	}
	return objs
}

func find[T any](objs []object, kind, name string) *T {
	for _, o := range objs {
		if o.kind == kind && o.name == name {
			if v, ok := o.obj.(*T); ok {
				return v
			}
		}
	}
	return nil
}

// checkCommon checks what every rendering must hold: the Cardinal
// container's hardening and probes, the selectors, the config checksum.
func checkCommon(t *testing.T, objs []object) {
	t.Helper()
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *appsv1.Deployment:
			sel := v.Spec.Selector.MatchLabels
			for k, want := range sel {
				if got := v.Spec.Template.Labels[k]; got != want {
					t.Errorf("Deployment %s: pod label %s=%q does not match the selector's %q", v.Name, k, got, want)
				}
			}
			if v.Spec.Template.Annotations["checksum/config"] == "" {
				t.Errorf("Deployment %s: no checksum/config annotation on the pod template", v.Name)
			}
			ps := v.Spec.Template.Spec
			if sc := ps.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
				sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("Deployment %s: pod securityContext %+v: want runAsNonRoot and seccomp RuntimeDefault", v.Name, sc)
			}
			c := cardinalContainer(ps)
			if c == nil {
				t.Errorf("Deployment %s: no container named cardinal", v.Name)
				continue
			}
			checkContainer(t, v.Name, c, ps)
		case *corev1.Service:
			for _, p := range v.Spec.Ports {
				if v.Name == releaseName && (p.Port != 9091 || p.TargetPort.String() != "http") {
					t.Errorf("Service %s: port %d → %s, want 9091 → http", v.Name, p.Port, p.TargetPort.String())
				}
			}
		case *corev1.Secret:
			for k, b := range v.Data {
				if len(bytes.TrimSpace(b)) == 0 {
					t.Errorf("Secret %s: key %s is empty", v.Name, k)
				}
			}
		case *policyv1.PodDisruptionBudget:
			if (v.Spec.MinAvailable == nil) == (v.Spec.MaxUnavailable == nil) {
				t.Errorf("PodDisruptionBudget %s: set exactly one of minAvailable and maxUnavailable", v.Name)
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			if v.Spec.ScaleTargetRef.Kind != "Deployment" || v.Spec.ScaleTargetRef.Name != releaseName || len(v.Spec.Metrics) == 0 {
				t.Errorf("HorizontalPodAutoscaler %s: target %+v, %d metrics", v.Name, v.Spec.ScaleTargetRef, len(v.Spec.Metrics))
			}
		case *podMonitor:
			// The sidecar's own /metrics, on the container port the
			// sidecar container declares.
			if len(v.Spec.PodMetricsEndpoints) != 1 || v.Spec.PodMetricsEndpoints[0].Port != "cardinal" || v.Spec.PodMetricsEndpoints[0].Path != "/metrics" {
				t.Errorf("PodMonitor %s: endpoints %+v, want port cardinal, path /metrics", v.Name, v.Spec.PodMetricsEndpoints)
			}
		case *serviceMonitor:
			if len(v.Spec.Endpoints) != 1 || v.Spec.Endpoints[0].Port != "http" || v.Spec.Endpoints[0].Path != "/metrics" {
				t.Errorf("ServiceMonitor %s: endpoints %+v, want port http, path /metrics", v.Name, v.Spec.Endpoints)
			}
		}
	}
}

func cardinalContainer(ps corev1.PodSpec) *corev1.Container {
	for i := range ps.Containers {
		if ps.Containers[i].Name == "cardinal" {
			return &ps.Containers[i]
		}
	}
	return nil
}

func checkContainer(t *testing.T, where string, c *corev1.Container, ps corev1.PodSpec) {
	t.Helper()
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("%s: cardinal has no securityContext", where)
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot, sc.RunAsUser == nil || *sc.RunAsUser != 65532,
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem,
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation,
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}),
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Errorf("%s: cardinal securityContext %+v is not the hardened one", where, sc)
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 9091 {
		t.Errorf("%s: cardinal ports %+v, want 9091", where, c.Ports)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/-/healthy" ||
		c.LivenessProbe.HTTPGet.Port.String() != c.Ports[0].Name {
		t.Errorf("%s: cardinal livenessProbe %+v, want GET /-/healthy on port %s", where, c.LivenessProbe, c.Ports[0].Name)
	}
	if rp := c.ReadinessProbe; rp != nil && (rp.HTTPGet == nil || rp.HTTPGet.Path != "/-/ready" || rp.HTTPGet.Port.String() != c.Ports[0].Name) {
		t.Errorf("%s: cardinal readinessProbe %+v, want GET /-/ready", where, rp)
	}
	if c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: cardinal has no memory limit", where)
	}
	// Every mount has a volume; with a read-only root, the state directory
	// must be a volume.
	vols := map[string]bool{}
	for _, v := range ps.Volumes {
		vols[v.Name] = true
	}
	for _, m := range c.VolumeMounts {
		if !vols[m.Name] {
			t.Errorf("%s: cardinal mounts %s, which is not a volume of the pod", where, m.Name)
		}
	}
}

// configPaths says where the rendered pod puts the config and the admin
// files, as far as the manifests tell.
type configPaths struct {
	configFile, tokenFile, stateDir string
}

// mountedPaths reads, from the Cardinal container and its volumes, the paths
// where cardinal.yml, the admin token and the state directory appear.
func mountedPaths(t *testing.T, where string, c *corev1.Container, ps corev1.PodSpec) configPaths {
	t.Helper()
	var p configPaths
	for _, a := range c.Args {
		if f, ok := strings.CutPrefix(a, "--config.file="); ok {
			p.configFile = f
		}
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		volumes[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		v := volumes[m.Name]
		switch {
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil && s.ConfigMap.Name == releaseName {
					for _, it := range s.ConfigMap.Items {
						if it.Key == "cardinal.yml" && path.Join(m.MountPath, it.Path) != p.configFile {
							t.Errorf("%s: cardinal.yml is mounted at %s, --config.file is %s", where, path.Join(m.MountPath, it.Path), p.configFile)
						}
					}
				}
				if s.Secret != nil {
					for _, it := range s.Secret.Items {
						p.tokenFile = path.Join(m.MountPath, it.Path)
					}
				}
			}
		case v.EmptyDir != nil || v.PersistentVolumeClaim != nil:
			p.stateDir = m.MountPath
		}
	}
	return p
}

// checkRenderedConfig extracts cardinal.yml from the ConfigMap, checks that
// its admin paths are where the pod mounts the token and the state volume,
// and runs `cardinal check config` on it with those files in a temporary
// directory.
func checkRenderedConfig(t *testing.T, objs []object, sidecar bool) {
	t.Helper()
	cm := find[corev1.ConfigMap](objs, "ConfigMap", releaseName)
	if cm == nil {
		t.Fatal("no ConfigMap " + releaseName)
	}
	data, ok := cm.Data["cardinal.yml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no cardinal.yml", releaseName)
	}
	var cfg yaml.MapSlice
	if err := yaml.UnmarshalStrict([]byte(data), &cfg); err != nil {
		t.Fatalf("cardinal.yml: %v", err)
	}
	var tokenFile, stateFile string
	var admin yaml.MapSlice
	for _, it := range cfg {
		if it.Key == "admin" {
			admin, _ = it.Value.(yaml.MapSlice)
		}
	}
	for _, it := range admin {
		switch it.Key {
		case "bearer_token_file":
			tokenFile, _ = it.Value.(string)
		case "state_file":
			stateFile, _ = it.Value.(string)
		}
	}

	// The pod that runs Cardinal, when the rendering has one.
	var ps *corev1.PodSpec
	for _, name := range []string{releaseName, releaseName + "-prometheus"} {
		if d := find[appsv1.Deployment](objs, "Deployment", name); d != nil {
			ps = &d.Spec.Template.Spec
		}
	}
	want := configPaths{configFile: "/etc/cardinal/cardinal.yml", tokenFile: "/etc/cardinal/admin-token", stateDir: "/var/lib/cardinal"}
	if ps != nil {
		want = mountedPaths(t, "pod", cardinalContainer(*ps), *ps)
	}
	if tokenFile != want.tokenFile {
		t.Errorf("admin.bearer_token_file is %q, the pod mounts the token at %q", tokenFile, want.tokenFile)
	}
	if stateFile != "" && path.Dir(stateFile) != want.stateDir {
		t.Errorf("admin.state_file is %q, the pod mounts the state volume at %q", stateFile, want.stateDir)
	}
	if stateFile == "" && ps != nil && want.stateDir != "" {
		t.Errorf("the pod mounts a state volume at %s but admin.state_file is not set", want.stateDir)
	}
	if sidecar && ps == nil && (tokenFile == "" || stateFile == "") {
		t.Errorf("sidecar config without the admin paths the NOTES snippet mounts: token %q, state %q", tokenFile, stateFile)
	}

	// Point the admin paths into a temporary directory and check the config.
	dir := t.TempDir()
	for i, it := range admin {
		switch it.Key {
		case "bearer_token_file":
			admin[i].Value = filepath.Join(dir, "admin-token")
			if err := os.WriteFile(admin[i].Value.(string), []byte("test-token\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		case "state_file":
			admin[i].Value = filepath.Join(dir, "limits.json")
		}
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "cardinal.yml")
	if err := os.WriteFile(file, out, 0o644); err != nil {
		t.Fatal(err)
	}
	checkConfig(t, file)
}

func decodeBase64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }

// TestDecodeManifestsIsStrict makes sure the decoding the other tests rely
// on refuses a misplaced field instead of dropping it.
func TestDecodeManifestsIsStrict(t *testing.T) {
	doc := "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  namespace: " + namespace + "\nspec:\n  prots: []\n"
	for _, bad := range []string{doc, strings.Replace(doc, "  prots: []\n", "  type: ClusterIP\n  type: NodePort\n", 1)} {
		var svc corev1.Service
		if err := sigsyaml.UnmarshalStrict([]byte(bad), &svc); err == nil {
			t.Errorf("strict decoding accepted:\n%s", bad)
		}
	}
	if obj := newObject("v1", "Pod"); obj != nil {
		t.Errorf("newObject(v1, Pod) = %T, want nil for kinds the chart does not render", obj)
	}
}
