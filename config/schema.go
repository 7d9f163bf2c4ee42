package config

import (
	"reflect"

	"github.com/prometheus/common/model"
)

// Schema returns a JSON schema of the configuration file, derived from
// Config by the same rules the parser decodes with: every mapping refuses
// keys it does not know. The Helm chart's values.schema.json holds it for
// its `config:` value (deploy/helmtest checks the two agree), so that a
// typo fails `helm template` instead of crash-looping the pod. Sections in
// omit are left out (the chart writes admin itself).
func Schema(omit ...string) map[string]any {
	s := schemaOf(reflect.TypeFor[Config]())
	props := s["properties"].(map[string]any)
	for _, k := range omit {
		delete(props, k)
	}
	s["required"] = []any{"downstream"}
	ds := props["downstream"].(map[string]any)
	ds["required"] = []any{"url"}
	ds["type"] = "object"
	ds["properties"].(map[string]any)["url"] = map[string]any{"type": "string", "pattern": "^https?://"}
	return s
}

var (
	durationType   = reflect.TypeFor[model.Duration]()
	labelNamesType = reflect.TypeFor[model.LabelNames]()
)

func schemaOf(t reflect.Type) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		return map[string]any{"type": "string", "pattern": `^(([0-9]+)(y|w|d|h|m|s|ms))+$`}
	case t == labelNamesType:
		return map[string]any{"type": "array", "items": map[string]any{"type": "string"}}
	}
	switch t.Kind() {
	case reflect.Struct:
		fields := yamlFields(t)
		if len(fields) == 0 {
			// Decoded from a scalar by its own parser: a regex, a URL, a
			// secret.
			return map[string]any{"type": "string"}
		}
		props := map[string]any{}
		var additional any = false
		for name, ft := range fields {
			if name == "" {
				additional = schemaOf(ft) // an inline map: any key
				continue
			}
			props[name] = schemaOf(ft)
		}
		// null too: a section written with every key commented out.
		return map[string]any{"type": []any{"object", "null"}, "additionalProperties": additional, "properties": props}
	case reflect.Map:
		return map[string]any{"type": []any{"object", "null"}, "additionalProperties": schemaOf(t.Elem())}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string"}
		}
		return map[string]any{"type": []any{"array", "null"}, "items": schemaOf(t.Elem())}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.String:
		return map[string]any{"type": "string"}
	}
	return map[string]any{}
}
