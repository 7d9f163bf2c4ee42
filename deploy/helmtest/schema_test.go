package helmtest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/cardinal-gateway/cardinal/config"
)

// chartConfigSchema is what values.schema.json must say of `config:`: the
// configuration file's own schema (config.Schema), without admin, which the
// chart writes itself.
func chartConfigSchema() map[string]any {
	s := config.Schema("admin")
	s["description"] = "cardinal.yml as an object; the chart writes the admin section itself. Generated from the config package (go test ./deploy/helmtest -update)."
	s["type"] = "object"
	s["not"] = map[string]any{"required": []any{"admin"}}
	return s
}

// Issue 12: a typo in `config:` rendered fine and crash-looped at start.
// The chart's schema for config is generated from the Config type, so it
// refuses exactly the keys the parser refuses.
func TestSchemaMatchesTheConfigParser(t *testing.T) {
	path := filepath.Join(chartDir, "values.schema.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	// Round-trip the generated schema through JSON so that types compare.
	want := roundTrip(t, chartConfigSchema())
	props := schema["properties"].(map[string]any)
	if *update {
		props["config"] = want
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(schema); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !reflect.DeepEqual(props["config"], want) {
		t.Fatalf("values.schema.json's config schema differs from config.Schema: run go test ./deploy/helmtest -update")
	}
}

func roundTrip(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
