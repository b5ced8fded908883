package wiring_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// root is the repository's root, from this package's directory.
const root = "../.."

// snippetDocs are the documents whose Go code blocks must all be excerpts
// of compiled files: a block is preceded by <!-- snippet: PATH --> naming
// the file (from the repository's root) that holds it.
var snippetDocs = []string{"README.md", "docs/adding-a-blob-type.md"}

// readmeWiringMax is the most lines the README's wiring block may have.
const readmeWiringMax = 40

var snippetRE = regexp.MustCompile("(?s)(<!-- snippet: ([^ ]+) -->\\s*\\n)?```go\\n(.*?)```")

// lines returns s's lines with their indentation and trailing spaces
// removed: a document may indent an excerpt differently from its file.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimRight(s, " \t\n"), "\n") {
		out = append(out, strings.TrimSpace(l))
	}
	return out
}

// contains reports whether want appears in have as consecutive lines.
func contains(have, want []string) bool {
	for i := 0; i+len(want) <= len(have); i++ {
		match := true
		for j := range want {
			if have[i+j] != want[j] {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

// TestDocSnippetsAreCompiled checks that every Go code block of the README
// and of docs/adding-a-blob-type.md is an excerpt, line for line, of the
// compiled file its snippet marker names (adapters in examples/, this
// package's wiring), so what the documents show builds, passes the
// conformance suite or runs in TestReadmeWiringReplicates, and cannot
// drift from the code. The README's wiring block is the whole README
// region of wiring.go, in at most readmeWiringMax lines.
func TestDocSnippetsAreCompiled(t *testing.T) {
	for _, doc := range snippetDocs {
		b, err := os.ReadFile(filepath.Join(root, doc))
		if err != nil {
			t.Fatal(err)
		}
		blocks := snippetRE.FindAllStringSubmatch(string(b), -1)
		if len(blocks) == 0 {
			t.Errorf("%s: no Go code block found", doc)
		}
		for _, m := range blocks {
			file, code := m[2], m[3]
			first := strings.SplitN(code, "\n", 2)[0]
			if file == "" {
				t.Errorf("%s: the Go block starting %q has no <!-- snippet: PATH --> marker naming the compiled file it comes from", doc, first)
				continue
			}
			src, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(file)))
			if err != nil {
				t.Errorf("%s: the block starting %q names %s: %v", doc, first, file, err)
				continue
			}
			if !contains(lines(string(src)), lines(code)) {
				t.Errorf("%s: the block starting %q is not an excerpt of %s (line for line, indentation aside): update the document from the file", doc, first, file)
			}
		}
	}
}

// readmeRegion returns the lines of wiring.go between its README markers,
// without the blank lines next to them.
func readmeRegion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("wiring.go")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "// README: begin\n")
	region, _, ok2 := strings.Cut(rest, "// README: end")
	if !ok || !ok2 {
		t.Fatal("wiring.go: no // README: begin ... // README: end region")
	}
	return strings.Trim(region, "\n") + "\n"
}

// TestReadmeShowsTheWholeWiring checks that the README holds wiring.go's
// whole README region as one block (not only a part of it) and that the
// region fits in readmeWiringMax lines.
func TestReadmeShowsTheWholeWiring(t *testing.T) {
	region := readmeRegion(t)
	if n := strings.Count(region, "\n"); n > readmeWiringMax {
		t.Errorf("wiring.go's README region: %d lines, want at most %d", n, readmeWiringMax)
	}
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range snippetRE.FindAllStringSubmatch(string(b), -1) {
		if m[2] == "examples/wiring/wiring.go" && m[3] == region {
			return
		}
	}
	t.Errorf("README.md: no Go block marked <!-- snippet: examples/wiring/wiring.go --> equal to wiring.go's README region")
}
