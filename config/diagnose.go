package config

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v2"
	yaml3 "go.yaml.in/yaml/v3"

	"github.com/prometheus/prometheus/model/relabel"
)

// The YAML decoder's errors say "line 3: field timout not found in type
// config.plain": a line and a Go type. diagnose walks the document against
// the Config type instead, so that an error names its path
// (downstream.timout) and suggests what was meant, and rewrites the
// decoder's type errors in the same terms.

// PathError is a configuration error at a path such as
// relabel_configs[3].regex.
type PathError struct {
	Path string
	Msg  string
}

func (e *PathError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// diagnosis is what a walk over the document learns.
type diagnosis struct {
	problem *PathError
	// lines maps a line to the path of the deepest node that starts on it.
	lines map[int]string
}

// diagnose checks data's keys against Config and finds the relabel rule a
// relabel error comes from. It returns nil when it finds nothing wrong (the
// decoder then has the last word).
func diagnose(data []byte) *diagnosis {
	var doc yaml3.Node
	if err := yaml3.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 {
		return &diagnosis{lines: map[int]string{}}
	}
	d := &diagnosis{lines: map[int]string{}}
	d.walk(doc.Content[0], reflect.TypeFor[Config](), "")
	if d.problem == nil {
		d.checkRelabel(doc.Content[0])
	}
	return d
}

var leafTypes = map[reflect.Type]bool{
	reflect.TypeFor[relabel.Regexp](): true,
}

// walk checks node against t at path.
func (d *diagnosis) walk(n *yaml3.Node, t reflect.Type, path string) {
	if d.problem != nil || n == nil {
		return
	}
	if n.Kind == yaml3.AliasNode {
		n = n.Alias
	}
	if _, ok := d.lines[n.Line]; !ok || path != "" {
		d.lines[n.Line] = path
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if leafTypes[t] || (t.Kind() != reflect.Struct && reflect.PointerTo(t).Implements(unmarshalerType)) ||
		(t.Kind() == reflect.Struct && len(yamlFields(t)) == 0 && reflect.PointerTo(t).Implements(unmarshalerType)) {
		// A value with its own parser (a duration, a regex): parse it
		// alone, so that its error has a path.
		d.checkLeaf(n, t, path)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml3.MappingNode {
			return // a scalar for a struct: the decoder says it
		}
		fields := yamlFields(t)
		if len(fields) == 0 {
			return // a struct decoded as a scalar (a duration, a secret)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			child := join(path, k.Value)
			d.lines[k.Line] = child
			ft, ok := fields[k.Value]
			if !ok {
				ft, ok = fields[""] // an inline map takes any key
			}
			if !ok || k.Value == "" {
				d.problem = &PathError{Path: child, Msg: unknownKey(k.Value, fields)}
				return
			}
			d.walk(v, ft, child)
		}
	case reflect.Map:
		if n.Kind != yaml3.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			child := fmt.Sprintf("%s[%q]", path, k.Value)
			d.lines[k.Line] = child
			d.walk(v, t.Elem(), child)
		}
	case reflect.Slice:
		if n.Kind != yaml3.SequenceNode {
			return
		}
		for i, item := range n.Content {
			d.walk(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	}
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// checkLeaf decodes n alone into a value of type t.
func (d *diagnosis) checkLeaf(n *yaml3.Node, t reflect.Type, path string) {
	b, err := yaml3.Marshal(n)
	if err != nil {
		return
	}
	if err := yaml.Unmarshal(b, reflect.New(t).Interface()); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if strings.HasSuffix(t.Name(), "Duration") {
			msg += " (want a duration such as 30s, 5m or 1h)"
		}
		d.problem = &PathError{Path: path, Msg: msg}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlFields returns the YAML keys of a struct type and their types,
// inline fields included. An inline map (any key allowed at that level) is
// returned under the key "" with the map's element type.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(opts, "inline") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Map {
				out[""] = ft.Elem()
				continue
			}
			for k, v := range yamlFields(ft) {
				out[k] = v
			}
			continue
		}
		if tag == "" {
			continue // not a YAML field
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

// unknownKey describes an unknown key, with the known key it most likely
// meant.
func unknownKey(key string, fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		if k != "" {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	// The closest key within a third of the key's length (at least 2
	// edits), or one that contains the key (token_file for
	// bearer_token_file).
	best, bestDist := "", max(2, len(key)/3)+1
	for _, k := range names {
		dist := editDistance(key, k)
		if len(key) >= 4 && (strings.Contains(k, key) || strings.Contains(key, k)) {
			dist = min(dist, max(2, len(key)/3))
		}
		if dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best != "" {
		return fmt.Sprintf("unknown key, did you mean %s?", best)
	}
	return "unknown key (known here: " + strings.Join(names, ", ") + ")"
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// checkRelabel decodes each relabel rule on its own, so that an error of
// Prometheus' relabel parser (which has no line) names its rule.
func (d *diagnosis) checkRelabel(root *yaml3.Node) {
	var seq *yaml3.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "relabel_configs" {
			seq = root.Content[i+1]
		}
	}
	if seq == nil || seq.Kind != yaml3.SequenceNode {
		return
	}
	for i, item := range seq.Content {
		b, err := yaml3.Marshal(item)
		if err != nil {
			continue
		}
		var rc relabel.Config
		if err := yaml.UnmarshalStrict(b, &rc); err != nil {
			path := fmt.Sprintf("relabel_configs[%d]", i)
			msg := strings.TrimPrefix(err.Error(), "yaml: ")
			if strings.Contains(msg, "regexp") {
				path += ".regex"
			}
			d.problem = &PathError{Path: path, Msg: msg}
			return
		}
	}
}

var yamlLineError = regexp.MustCompile(`^line (\d+): (.*)$`)

var yamlTypeError = regexp.MustCompile("cannot unmarshal !!(\\w+) `([^`]*)` into (\\S+)")

// explainDecodeError turns the YAML decoder's error into one that names
// paths and no Go types.
func (d *diagnosis) explainDecodeError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n")
	var lines []string
	for _, l := range strings.Split(msg, "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		path := ""
		if m := yamlLineError.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			path, l = d.lines[n], m[2]
			if path == "" {
				l = "line " + m[1] + ": " + l
			}
		}
		if m := yamlTypeError.FindStringSubmatch(l); m != nil {
			l = fmt.Sprintf("got %s %q, want %s", yamlKind(m[1]), m[2], friendlyType(m[3]))
		}
		lines = append(lines, (&PathError{Path: path, Msg: l}).Error())
	}
	return fmt.Errorf("%s", strings.Join(lines, "; "))
}

func yamlKind(tag string) string {
	switch tag {
	case "str":
		return "the string"
	case "int", "float":
		return "the number"
	case "bool":
		return "the boolean"
	case "seq":
		return "a list"
	case "map":
		return "a mapping"
	}
	return "the value"
}

// friendlyType names a Go type in the config's terms.
func friendlyType(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["):
		return "a mapping"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "an integer"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "string":
		return "a string"
	case strings.HasSuffix(goType, "Duration"):
		return "a duration such as 30s or 5m"
	}
	return "a " + strings.ToLower(goType[strings.LastIndex(goType, ".")+1:])
}
