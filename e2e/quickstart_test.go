package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v2"

	"github.com/cardinal-gateway/cardinal/internal/promtest"
)

// TestE2EQuickStart runs the README's quick start as written
// (deploy/quickstart/quickstart.sh, with real Prometheus binaries and the
// demo's traffic) in its checking mode, on free ports.
func TestE2EQuickStart(t *testing.T) {
	prom := promtest.Binary(t)
	bin := cardinalBinary(t)
	addr := func() string {
		a, err := freeLoopbackAddr()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	cmd := exec.Command("bash", "../deploy/quickstart/quickstart.sh")
	cmd.Env = append(os.Environ(),
		"QUICKSTART_CHECK=1", "CARDINAL="+bin, "PROMETHEUS="+prom,
		"QUICKSTART_DIR="+t.TempDir(),
		"RECEIVER_ADDR="+addr(), "CARDINAL_ADDR="+addr(), "EXPORTER_ADDR="+addr(), "SENDER_ADDR="+addr())
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		out, err = cmd.CombinedOutput()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("the quick start did not finish:\n%s", out)
	}
	if err != nil || !strings.Contains(string(out), "quick start OK") {
		t.Fatalf("quick start: %v\n%s", err, out)
	}
	t.Log(lastLine(string(out)))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestQuickStartComposeMatchesScript: docker-compose.yml runs the same
// configuration files and ports as quickstart.sh.
func TestQuickStartComposeMatchesScript(t *testing.T) {
	script, err := os.ReadFile("../deploy/quickstart/quickstart.sh")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../deploy/quickstart/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Command []string `yaml:"command"`
			Volumes []string `yaml:"volumes"`
			Ports   []string `yaml:"ports"`
		} `yaml:"services"`
	}
	if err := yaml.UnmarshalStrict(raw, &compose); err != nil {
		// Other keys (image, build, network_mode) are fine; decode loosely.
		if err := yaml.Unmarshal(raw, &compose); err != nil {
			t.Fatal(err)
		}
	}
	// The files the script uses, and that compose must mount.
	for _, f := range []string{"receiver.yml", "sender.yml", "examples/istio.yml"} {
		if !strings.Contains(string(script), filepath.Base(f)) {
			t.Errorf("the script does not use %s", f)
		}
		found := false
		for _, s := range compose.Services {
			for _, v := range s.Volumes {
				if strings.HasSuffix(strings.SplitN(v, ":", 2)[0], f) {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("compose mounts no %s", f)
		}
	}
	// The script's default addresses are the ones compose listens on and
	// publishes.
	for name, def := range map[string]string{"RECEIVER_ADDR": "127.0.0.1:9090", "CARDINAL_ADDR": "127.0.0.1:9091", "SENDER_ADDR": "127.0.0.1:9092", "EXPORTER_ADDR": "127.0.0.1:9100"} {
		if !strings.Contains(string(script), name+`="${`+name+`:-`+def+`}"`) {
			t.Errorf("the script's default %s is not %s", name, def)
		}
		port := strings.Split(def, ":")[1]
		if !slices.Contains(compose.Services["receiver"].Ports, port+":"+port) {
			t.Errorf("compose does not publish %s (%s)", port, name)
		}
		listening := false
		for _, s := range compose.Services {
			for _, c := range s.Command {
				if strings.Contains(c, def) {
					listening = true
				}
			}
		}
		if !listening && name != "RECEIVER_ADDR" {
			t.Errorf("no compose service uses %s (%s)", def, name)
		}
	}
}

// freeLoopbackAddr returns a 127.0.0.1 address with a free port.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
