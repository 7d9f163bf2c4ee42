// Package relabel owns Cardinal's relabelling: Prometheus relabel_configs,
// compiled once into an immutable Program and applied to the byte-slice
// labels of a decoded request.
//
// It promises Prometheus semantics: for every action that
// github.com/prometheus/prometheus/model/relabel supports, Program.Apply
// keeps, drops and rewrites exactly as relabel.ProcessBuilder on a
// labels.Builder does, including the order in which labelmap visits labels
// that earlier rules set. The differential and fuzz tests hold it to that.
//
// It also promises speed. Apply works in place on the request's labels and
// writes new names and values into a per-goroutine Scratch. After warm-up it
// allocates nothing for keep, drop, labelkeep and labeldrop, whether their
// regex is a literal alternation (matched by set lookup), an alternation of
// literal prefixes such as "go_.*|process_.*", or a real regex (matched with
// the byte API of the regexp package), nor for keepequal, dropequal,
// hashmod, lowercase and uppercase. replace and labelmap allocate nothing
// either unless their templates use a capture group of a regex that is not
// a literal prefix followed by (.*) or (.+), the shape of the default
// regex: regexp.FindSubmatchIndex then allocates the index slice, once per
// match (see matcher.submatch).
package relabel
