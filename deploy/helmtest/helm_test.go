package helmtest

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cardinal-gateway/cardinal/internal/promtest"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current chart")

// Paths relative to this package's directory, where go test runs.
const (
	repoRoot    = "../.."
	chartDir    = "../helm/cardinal"
	examplesDir = "../examples"
	helmExDir   = "../helm/examples"
	goldenDir   = "testdata/golden"

	releaseName = "cardinal"
	namespace   = "monitoring"
)

// cardinalBin is built once by TestMain.
var cardinalBin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "helmtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cardinalBin = filepath.Join(dir, "cardinal")
	build := exec.Command("go", "build", "-o", cardinalBin, "./cmd/cardinal")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "cannot build cardinal: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// helmBinary finds helm: $HELM_BINARY, PATH, then $(go env GOPATH)/bin. A
// missing helm skips the test, or fails it under CARDINAL_E2E=require.
func helmBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("HELM_BINARY"); p != "" {
		return p
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", "helm")
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	msg := "helm not found in $HELM_BINARY, PATH or $(go env GOPATH)/bin; `make deps` installs it"
	if os.Getenv(promtest.EnvE2E) == promtest.EnvE2ERequire {
		t.Fatalf("%s; %s=%s forbids skipping", msg, promtest.EnvE2E, promtest.EnvE2ERequire)
	}
	t.Skip(msg)
	return ""
}

// runHelm runs helm with args and returns its stdout; a failure fails the test.
func runHelm(t *testing.T, helm string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(helm, args...)
	// Keep helm away from the user's kube config, caches and repositories.
	home := t.TempDir()
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "kubeconfig"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes()
}

// chartCase is one set of values the chart is linted and rendered with.
type chartCase struct {
	name   string
	values []string // values files
	set    []string // --set arguments
	// kinds lists the rendered objects as "Kind/name", in any order.
	kinds []string
	// golden compares the output with testdata/golden/<name>.yaml.
	golden bool
	// sidecar: the Cardinal container runs next to Prometheus, in the
	// Deployment <release>-prometheus when one is rendered.
	sidecar bool
}

func chartCases() []chartCase {
	return []chartCase{
		{
			name:   "standalone-default",
			kinds:  []string{"ConfigMap/cardinal", "Secret/cardinal-admin", "ServiceAccount/cardinal", "Deployment/cardinal", "Service/cardinal"},
			golden: true,
		},
		{
			name:   "standalone-full",
			values: []string{"testdata/standalone-full.values.yaml"},
			kinds: []string{"ConfigMap/cardinal", "ServiceAccount/cardinal", "Deployment/cardinal", "Service/cardinal", "Service/cardinal-peers",
				"PodDisruptionBudget/cardinal", "HorizontalPodAutoscaler/cardinal", "ServiceMonitor/cardinal"},
			golden: true,
		},
		{
			name: "standalone-cluster",
			set:  []string{"cluster.enabled=true", "replicaCount=3"},
			kinds: []string{"ConfigMap/cardinal", "Secret/cardinal-admin", "ServiceAccount/cardinal", "Deployment/cardinal",
				"Service/cardinal", "Service/cardinal-peers", "PodDisruptionBudget/cardinal"},
			golden: true,
		},
		{
			name: "standalone-persistence",
			set:  []string{"persistence.enabled=true", "persistence.storageClass=fast-ssd", "persistence.size=128Mi"},
			kinds: []string{"ConfigMap/cardinal", "Secret/cardinal-admin", "ServiceAccount/cardinal", "Deployment/cardinal",
				"Service/cardinal", "PersistentVolumeClaim/cardinal"},
			golden: true,
		},
		{
			name:   "sidecar",
			values: []string{filepath.Join(helmExDir, "sidecar.values.yaml")},
			set:    []string{"admin.token=0123456789abcdef0123456789abcdef"},
			kinds:  []string{"ConfigMap/cardinal", "Secret/cardinal-admin", "PodMonitor/cardinal"},
			golden: true, sidecar: true,
		},
		{
			name:   "sidecar-prometheus",
			values: []string{filepath.Join(helmExDir, "sidecar.values.yaml")},
			set:    []string{"admin.token=0123456789abcdef0123456789abcdef", "sidecar.prometheusDeployment.enabled=true"},
			kinds: []string{"ConfigMap/cardinal", "Secret/cardinal-admin", "ConfigMap/cardinal-prometheus",
				"Deployment/cardinal-prometheus", "Service/cardinal-prometheus", "PodMonitor/cardinal"},
			golden: true, sidecar: true,
		},
		{
			name:   "sidecar-no-shard-label",
			values: []string{filepath.Join(helmExDir, "sidecar.values.yaml")},
			set:    []string{"admin.token=0123456789abcdef0123456789abcdef", "sidecar.prometheusDeployment.enabled=true", "sidecar.shardLabel="},
			kinds: []string{"ConfigMap/cardinal", "Secret/cardinal-admin", "ConfigMap/cardinal-prometheus",
				"Deployment/cardinal-prometheus", "Service/cardinal-prometheus", "PodMonitor/cardinal"},
			golden: false, sidecar: true,
		},
		{
			name:   "standalone-no-admin",
			set:    []string{"admin.enabled=false"},
			kinds:  []string{"ConfigMap/cardinal", "ServiceAccount/cardinal", "Deployment/cardinal", "Service/cardinal"},
			golden: false,
		},
	}
}

func (c chartCase) args() []string {
	var args []string
	for _, f := range c.values {
		args = append(args, "--values", f)
	}
	for _, s := range c.set {
		args = append(args, "--set", s)
	}
	return args
}

func TestHelmLint(t *testing.T) {
	helm := helmBinary(t)
	for _, c := range chartCases() {
		t.Run(c.name, func(t *testing.T) {
			out := runHelm(t, helm, append([]string{"lint", "--strict", chartDir, "--namespace", namespace}, c.args()...)...)
			if !bytes.Contains(out, []byte("0 chart(s) failed")) {
				t.Errorf("helm lint output:\n%s", out)
			}
		})
	}
}

func TestHelmTemplate(t *testing.T) {
	helm := helmBinary(t)
	for _, c := range chartCases() {
		t.Run(c.name, func(t *testing.T) {
			out := helmTemplate(t, helm, c.args()...)
			objs := decodeManifests(t, out)
			var got []string
			for _, o := range objs {
				got = append(got, o.kind+"/"+o.name)
			}
			if !sameSet(got, c.kinds) {
				t.Errorf("rendered objects %v, want %v", got, c.kinds)
			}
			checkCommon(t, objs)
			checkRenderedConfig(t, objs, c.sidecar)
			if c.golden {
				compareGolden(t, c.name, normalize(t, out))
			}
		})
	}
}

func helmTemplate(t *testing.T, helm string, args ...string) []byte {
	t.Helper()
	base := []string{"template", releaseName, chartDir, "--namespace", namespace, "--kube-version", "1.30.0"}
	return runHelm(t, helm, append(base, args...)...)
}

// TestHelmSchemaRejects checks that values.schema.json catches the mistakes
// it is there for.
func TestHelmSchemaRejects(t *testing.T) {
	helm := helmBinary(t)
	f := func(set, wantErr string) {
		t.Helper()
		cmd := exec.Command(helm, "template", releaseName, chartDir, "--set", set)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(t.TempDir(), "kubeconfig"))
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("--set %s: helm template succeeded, want a schema error", set)
			return
		}
		if !strings.Contains(string(out), wantErr) {
			t.Errorf("--set %s: error %q does not mention %q", set, out, wantErr)
		}
	}
	f("mode=daemonset", "mode")
	f("replicaCount=-1", "replicaCount")
	f("config=oops", "config")
	f("config.admin.state_file=/tmp/x", "config")
	f("config.downstream.url=ftp://x", "url")
	f("resources.limits.memory=512Mi,resources.bogus=1", "resources")
	f("podDisruptionBudget.minAvailable=half", "minAvailable")
	f("tpyo=1", "tpyo")
	// The config parser's own keys: a typo under config fails here, not
	// in a crash-looping pod.
	f("config.downstream.timout=5s", "timout")
	f("config.merge.flush_intervall=5s", "flush_intervall")
	f("config.limits.max_series_per_workload=lots", "max_series_per_workload")
	// Cluster and sidecar values: durations the flags parse, a label name.
	f("cluster.enabled=yes", "enabled")
	f("cluster.peerTimeout=30", "peerTimeout")
	f("cluster.handoverDelay=1d", "handoverDelay")
	f("cluster.peers=a:1", "peers")
	f("clusterDomain=Cluster_Local", "clusterDomain")
	f("sidecar.shardLabel=shard-id", "shardLabel")
	f("sidecar.shardLabel=__shard", "shardLabel")
	f("podDisruptionBudget.enabled=sometimes", "enabled")
}

// Issue 12: with a helm built by go install (which assumes Kubernetes
// 1.20), `helm template` failed on the chart's kubeVersion constraint.
func TestHelmTemplateWithoutKubeVersion(t *testing.T) {
	helm := helmBinary(t)
	cmd := exec.Command(helm, "template", releaseName, chartDir)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(t.TempDir(), "kubeconfig"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helm template without --kube-version: %v\n%s", err, out)
	}
}

// TestHelmPresetsInChart renders the chart with each mesh preset as its
// config and checks the result, so the presets can be pasted under config:.
func TestHelmPresetsInChart(t *testing.T) {
	helm := helmBinary(t)
	for _, preset := range []string{"istio.yml", "linkerd.yml", "cardinal.yml"} {
		t.Run(preset, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(examplesDir, preset))
			if err != nil {
				t.Fatal(err)
			}
			values := "config:\n" + indent(string(data), "  ")
			path := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(path, []byte(values), 0o644); err != nil {
				t.Fatal(err)
			}
			runHelm(t, helm, "lint", "--strict", chartDir, "--values", path)
			objs := decodeManifests(t, helmTemplate(t, helm, "--values", path))
			checkRenderedConfig(t, objs, false)
		})
	}
}

// TestExamplesCheckConfig runs `cardinal check config` on every example.
func TestExamplesCheckConfig(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(examplesDir, "*.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cardinal.yml", "istio.yml", "linkerd.yml"} {
		if !containsBase(files, want) {
			t.Errorf("deploy/examples/%s is missing", want)
		}
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			checkConfig(t, f)
		})
	}
}

// checkConfig runs `cardinal check config path`; it must succeed.
func checkConfig(t *testing.T, path string) {
	t.Helper()
	cmd := exec.Command(cardinalBin, "check", "config", path)
	// What the pods' env gives the ${VAR} the chart writes into the config
	// (sidecar.shardLabel's external label).
	cmd.Env = append(os.Environ(), "POD_NAME=prometheus-k8s-0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cardinal check config %s: %v\n%s", path, err, out)
	}
	if !bytes.Contains(out, []byte(": OK")) {
		t.Fatalf("cardinal check config %s printed:\n%s", path, out)
	}
}

// randomToken matches the generated admin token of the default values.
var randomToken = regexp.MustCompile(`(?m)^(  admin-token: )"([A-Za-z0-9+/=]+)"$`)

// normalize replaces what differs between runs: the admin token that
// randAlphaNum generates when none is given.
func normalize(t *testing.T, out []byte) []byte {
	t.Helper()
	return randomToken.ReplaceAllFunc(out, func(m []byte) []byte {
		sub := randomToken.FindSubmatch(m)
		if tok, err := decodeBase64(string(sub[2])); err != nil || len(tok) != 32 {
			t.Errorf("admin token %q: want 32 random characters (err %v)", sub[2], err)
		}
		return append(sub[1], `"<generated>"`...)
	})
}

func compareGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join(goldenDir, name+".yaml")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./deploy/helmtest/ -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("helm template output differs from %s (run with -update after checking the change):\n%s", path, lineDiff(string(want), string(got)))
	}
}

// lineDiff shows the first lines that differ, enough to see what changed.
func lineDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	var sb strings.Builder
	shown := 0
	for i := 0; i < max(len(wl), len(gl)) && shown < 20; i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			fmt.Fprintf(&sb, "line %d:\n  want: %s\n  got:  %s\n", i+1, w, g)
			shown++
		}
	}
	return sb.String()
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	count := map[string]int{}
	for _, s := range a {
		count[s]++
	}
	for _, s := range b {
		count[s]--
	}
	for _, n := range count {
		if n != 0 {
			return false
		}
	}
	return true
}

func containsBase(paths []string, base string) bool {
	for _, p := range paths {
		if filepath.Base(p) == base {
			return true
		}
	}
	return false
}
