// Package htmltest reads the tables of an HTML page, for the tests of the
// explorer page (server-side rendered, so plain text processing suffices).
package htmltest

import (
	"html"
	"regexp"
	"strings"
)

var (
	rowRe  = regexp.MustCompile(`(?s)<tr[^>]*>(.*?)</tr>`)
	cellRe = regexp.MustCompile(`(?s)<td[^>]*>(.*?)</td>`)
	tagRe  = regexp.MustCompile(`(?s)<[^>]*>`)
)

// TableRows returns the text of the cells of every body row of the table
// with the id attribute id in page: tags stripped, spaces collapsed,
// entities decoded. It returns nil when there is no such table.
func TableRows(page, id string) [][]string { return tableRows(page, id, html.UnescapeString) }

// RawTableRows is TableRows with the entities left as the page has them,
// for tests of the escaping itself.
func RawTableRows(page, id string) [][]string {
	return tableRows(page, id, func(s string) string { return s })
}

func tableRows(page, id string, decode func(string) string) [][]string {
	_, rest, ok := strings.Cut(page, `id="`+id+`"`)
	if !ok {
		return nil
	}
	table, _, _ := strings.Cut(rest, "</table>")
	_, body, _ := strings.Cut(table, "<tbody>")
	var out [][]string
	for _, tr := range rowRe.FindAllStringSubmatch(body, -1) {
		var cells []string
		for _, td := range cellRe.FindAllStringSubmatch(tr[1], -1) {
			text := tagRe.ReplaceAllString(td[1], " ")
			cells = append(cells, decode(strings.Join(strings.Fields(text), " ")))
		}
		out = append(out, cells)
	}
	return out
}
