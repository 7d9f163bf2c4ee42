package helmtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDockerfile checks the image's promises that the chart relies on, since
// no Docker engine runs in CI (`make static-build` checks the build itself):
// static build with a stamped version, user 65532, port 9091, and a default
// config path where the chart mounts cardinal.yml.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(data)
	for _, want := range []string{
		"CGO_ENABLED=0",
		"go build -trimpath",
		`-X main.version=${VERSION}`,
		"ARG VERSION",
		"FROM gcr.io/distroless/static",
		"USER 65532:65532",
		"EXPOSE 9091",
		`ENTRYPOINT ["/usr/local/bin/cardinal"]`,
		`CMD ["serve", "--config.file=/etc/cardinal/cardinal.yml"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile does not contain %q", want)
		}
	}
	ignore, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(ignore), "\n") {
		if l = strings.TrimSpace(l); l == "deploy" || l == "deploy/examples" || l == "cmd" || l == "go.sum" {
			t.Errorf(".dockerignore excludes %s, which the image build needs", l)
		}
	}
}
