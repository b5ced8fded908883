package docscheck

import (
	"fmt"
	"go/ast"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"
)

// The Markdown documents checked: the repository's own, and every page
// under docs/.
func markdownFiles(t *testing.T, root string) []string {
	t.Helper()
	files := []string{"README.md", "CHANGELOG.md", "CONTRIBUTING.md", "SECURITY.md"}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		rel, _ := filepath.Rel(root, d)
		files = append(files, filepath.ToSlash(rel))
	}
	var out []string
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(root, f)); err == nil {
			out = append(out, f)
		}
	}
	return out
}

// index parses the module (a fraction of a second: each test loads its
// own rather than sharing package-level state).
func index(t *testing.T) *Index {
	t.Helper()
	ix, err := Load(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

var (
	// pkg.Name or pkg.Name.Member, pkg a package name or a path
	// ("blob/dirblob.Open"); not preceded by a word, a dot, a slash or a
	// hyphen (so gocloud.dev/blob.Bucket is not geo's).
	qualifiedRE = regexp.MustCompile(`(?:^|[^\w./\-])((?:[a-z][a-z0-9]*/)*[a-z][a-z0-9]*)\.([A-Z]\w*)(?:\.([A-Z]\w*))?`)
	// Type.Member, unqualified.
	memberRE = regexp.MustCompile(`(?:^|[^\w./\-])([A-Z]\w*)\.([A-Z]\w*)`)
	// `Name` or `Name(args)` alone in a code span.
	bareRE = regexp.MustCompile("`([A-Z][A-Za-z0-9]*)(?:\\([^`]*\\))?`")
	// A path in the repository.
	repoPathRE = regexp.MustCompile(`(?:^|[^\w./\-])((?:blob|cmd|docs|events|examples|geotest|internal|registry|replicator|strategy)/[\w./\-]*\w)`)
	// The identifier after a package path ("blob/dirblob.Open").
	identAfterPathRE = regexp.MustCompile(`\.[A-Z]`)
	// A Markdown link's target.
	linkRE = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	// A region the checks skip: names that are gone on purpose (a
	// changelog's incompatible changes, the names a rename replaced).
	offRE = regexp.MustCompile(`(?s)<!-- docscheck: off -->.*?<!-- docscheck: on -->`)
	// A fenced code block.
	fenceRE = regexp.MustCompile("(?s)```.*?```")
)

// bareAllowed are names that appear alone in code spans and are not
// geo's own: other packages' identifiers, SQL, HTTP and Prometheus words.
var bareAllowed = map[string]bool{
	"Authorization": true, "Content-Length": true, "MaxIdleConnsPerHost": true,
	"Rows": true, "Tx": true, "ErrNoRows": true, "QueryContext": true,
	"ExecContext": true, "PreparexContext": true, "GetContext": true, "SelectContext": true,
	"ExtContext": true, "Execer": true, "TestMain": true, "RunE": true,
	"AbortIncompleteMultipartUpload": true, "StartAfter": true, "BeforeList": true,
	"ObjectParentIsFile": true, "SlowDown": true, "Geo-Position": true,
	"SetMaxIdleConns": true, "SetMaxOpenConns": true, "CrossOriginProtection": true,
	"Origin": true, "HttpOnly": true, "Secure": true, "VmHWM": true, "ReadDir": true,
	"ResponseHeaderTimeout": true, "CopyIn": true,
	// GitLab's workers, in performance.md's comparison.
	"RegistryConsistencyWorker": true, "RegistrySyncWorker": true,
}

// A problem found, for messages sorted by place.
type problem struct{ where, what string }

func (p problem) String() string { return p.where + ": " + p.what }

func report(t *testing.T, probs []problem) {
	t.Helper()
	sort.Slice(probs, func(i, j int) bool { return probs[i].where < probs[j].where })
	seen := map[string]bool{}
	for _, p := range probs {
		if s := p.String(); !seen[s] {
			seen[s] = true
			t.Error(s)
		}
	}
}

// lineOf returns the 1-based line of offset i in s.
func lineOf(s string, i int) int { return strings.Count(s[:i], "\n") + 1 }

// blank replaces the text of every match of re with spaces, keeping line
// numbers and offsets.
func blank(s string, re *regexp.Regexp) string {
	return re.ReplaceAllStringFunc(s, func(m string) string {
		return strings.Map(func(r rune) rune {
			if r == '\n' {
				return r
			}
			return ' '
		}, m)
	})
}

// checkQualified reports pkg.Name[.Member] references in text that name a
// package of the module but nothing it declares. imports, when set, maps a
// file's import names to paths (for comments).
func checkQualified(ix *Index, text string, where func(int) string, imports map[string]string) []problem {
	var probs []problem
	for _, m := range qualifiedRE.FindAllStringSubmatchIndex(text, -1) {
		p, name := text[m[2]:m[3]], text[m[4]:m[5]]
		member := ""
		if m[6] >= 0 {
			member = text[m[6]:m[7]]
		}
		var pkgs []*Package
		if imports != nil {
			if ip, ok := imports[p]; ok {
				if pkg := ix.Pkgs[ip]; pkg != nil {
					pkgs = []*Package{pkg}
				} else {
					continue // another module's package
				}
			}
		}
		if pkgs == nil {
			pkgs = ix.Resolve(p)
		}
		if len(pkgs) == 0 {
			continue
		}
		ok := false
		for _, pkg := range pkgs {
			if !pkg.Names[name] {
				continue
			}
			if member == "" || ix.HasMember(Ref{pkg.Path, name}, member) {
				ok = true
				break
			}
		}
		if !ok {
			ref := p + "." + name
			if member != "" {
				ref += "." + member
			}
			probs = append(probs, problem{where(m[2]), fmt.Sprintf("%s names nothing %s declares", ref, pkgs[0].Path)})
		}
	}
	return probs
}

// checkNoInternals reports pkg.Name references to packages under
// internal/: only docs/architecture.md names the engines' insides (as
// such); the other documents speak of what an adopter can use.
func checkNoInternals(ix *Index, text string, where func(int) string) []problem {
	var probs []problem
	for _, m := range qualifiedRE.FindAllStringSubmatchIndex(text, -1) {
		p := text[m[2]:m[3]]
		pkgs := ix.Resolve(p)
		if len(pkgs) == 0 || !strings.Contains(pkgs[0].Path, "/internal/") {
			continue
		}
		probs = append(probs, problem{where(m[2]), fmt.Sprintf("%s.%s is internal (%s): name it only in docs/architecture.md", p, text[m[4]:m[5]], pkgs[0].Path)})
	}
	return probs
}

// checkMembers reports Type.Member references whose type exists in the
// module (in local, when given, first) without that member.
func checkMembers(ix *Index, text string, where func(int) string, local *Package) []problem {
	var probs []problem
	for _, m := range memberRE.FindAllStringSubmatchIndex(text, -1) {
		typ, member := text[m[2]:m[3]], text[m[4]:m[5]]
		var refs []Ref
		if local != nil && local.Names[typ] {
			if _, ok := local.Types[typ]; ok {
				refs = []Ref{{local.Path, typ}}
			} else {
				continue // a constant or function of that name
			}
		} else {
			refs = ix.TypesNamed(typ)
		}
		if len(refs) == 0 {
			continue
		}
		ok := false
		for _, r := range refs {
			if ix.HasMember(r, member) {
				ok = true
				break
			}
		}
		if !ok {
			probs = append(probs, problem{where(m[2]), fmt.Sprintf("%s.%s: %s has no member %s", typ, member, refs[0].Pkg+"."+typ, member)})
		}
	}
	return probs
}

// slug is GitHub's anchor for a heading.
func slug(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func anchors(text string) map[string]bool {
	text = blank(text, fenceRE)
	out := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "#") {
			out[slug(strings.TrimLeft(line, "#"))] = true
		}
	}
	return out
}

// TestDocsNameOnlyExistingIdentifiers checks the Markdown documents: every
// geo identifier they name (pkg.Name, pkg.Type.Member, Type.Member, a
// lone `Name` in a code span) is declared by the code, every repository
// path they name exists, and every relative link and anchor resolves.
// Text between <!-- docscheck: off --> and <!-- docscheck: on --> is
// skipped: the names a changelog says are gone.
func TestDocsNameOnlyExistingIdentifiers(t *testing.T) {
	ix := index(t)
	var probs []problem
	for _, f := range markdownFiles(t, ix.Root) {
		b, err := os.ReadFile(filepath.Join(ix.Root, f))
		if err != nil {
			t.Fatal(err)
		}
		text := blank(string(b), offRE)
		where := func(i int) string { return fmt.Sprintf("%s:%d", f, lineOf(text, i)) }
		probs = append(probs, checkQualified(ix, text, where, nil)...)
		probs = append(probs, checkMembers(ix, text, where, nil)...)
		if f != "docs/architecture.md" {
			probs = append(probs, checkNoInternals(ix, text, where)...)
		}
		for _, m := range bareRE.FindAllStringSubmatchIndex(text, -1) {
			name := text[m[2]:m[3]]
			if !strings.ContainsFunc(name, unicode.IsLower) || bareAllowed[name] || ix.Exported(name) || ix.Tests[name] {
				continue
			}
			probs = append(probs, problem{where(m[2]), fmt.Sprintf("`%s` is declared nowhere in the module", name)})
		}
		for _, m := range repoPathRE.FindAllStringSubmatchIndex(text, -1) {
			p := strings.TrimSuffix(text[m[2]:m[3]], ".")
			if i := identAfterPathRE.FindStringIndex(p); i != nil { // blob/dirblob.Open
				p = p[:i[0]]
			}
			if strings.HasSuffix(p, "/s") { // a rate: "300 events/s"
				continue
			}
			if _, err := os.Stat(filepath.Join(ix.Root, filepath.FromSlash(p))); err != nil {
				probs = append(probs, problem{where(m[2]), fmt.Sprintf("path %s does not exist", p)})
			}
		}
		for _, m := range linkRE.FindAllStringSubmatchIndex(text, -1) {
			target := text[m[2]:m[3]]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, anchor, _ := strings.Cut(target, "#")
			dest := filepath.Join(ix.Root, filepath.Dir(f), filepath.FromSlash(file))
			if file == "" {
				dest = filepath.Join(ix.Root, f)
			}
			db, err := os.ReadFile(dest)
			if err != nil {
				if st, serr := os.Stat(dest); serr == nil && st.IsDir() {
					continue
				}
				probs = append(probs, problem{where(m[2]), fmt.Sprintf("link %s: no such file", target)})
				continue
			}
			if anchor != "" && strings.HasSuffix(dest, ".md") && !anchors(string(db))[anchor] {
				probs = append(probs, problem{where(m[2]), fmt.Sprintf("link %s: no heading with that anchor", target)})
			}
		}
	}
	report(t, probs)
}

// docComments returns the doc comments of f: the package's, and those of
// every declaration, spec and field.
func docComments(f *ast.File) []*ast.CommentGroup {
	var out []*ast.CommentGroup
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.File:
			out = append(out, n.Doc)
		case *ast.GenDecl:
			out = append(out, n.Doc)
		case *ast.FuncDecl:
			out = append(out, n.Doc)
		case *ast.TypeSpec:
			out = append(out, n.Doc, n.Comment)
		case *ast.ValueSpec:
			out = append(out, n.Doc, n.Comment)
		case *ast.Field:
			out = append(out, n.Doc, n.Comment)
		}
		return true
	})
	var kept []*ast.CommentGroup
	for _, c := range out {
		if c != nil {
			kept = append(kept, c)
		}
	}
	return kept
}

// RepoDocURL is how a doc comment points at a document of the repository:
// pkg.go.dev shows comments away from the repository, where a relative
// path leads nowhere.
const RepoDocURL = "https://github.com/geoframework/geo/blob/main/"

var (
	// A link definition: "[Text]: URL" on a line of its own.
	linkDefRE = regexp.MustCompile(`(?m)^\[([^\]]+)\]:\s`)
	docPathRE = regexp.MustCompile(`(?:\S*/)?docs/[\w\-]+\.md`)
	// A doc link: [Name], [Name.Member], [pkg.Name], [pkg.Name.Member],
	// pkg possibly a path; not a Markdown-style link or a link definition.
	docLinkRE = regexp.MustCompile(`\[\*?((?:[\w.\-]+/)*[a-z]\w*\.)?([A-Z]\w*)(?:\.([A-Z]\w*))?\]([^(:]|$)`)
)

// TestGodocNamesOnlyExistingIdentifiers checks the comments of geo's
// public packages (and the examples') as the Markdown is checked, that
// their doc links resolve (go doc and pkg.go.dev show an unresolved
// [Name] as plain text, silently), and that their doc comments name a
// document of the repository only by a link that pkg.go.dev can follow
// (RepoDocURL + "docs/...").
func TestGodocNamesOnlyExistingIdentifiers(t *testing.T) {
	ix := index(t)
	var probs []problem
	for _, pkg := range ix.Pkgs {
		if !pkg.Public(ix.Module) && !strings.Contains(pkg.Path, "/examples/") {
			continue
		}
		pkgImports := map[string]string{}
		for _, f := range pkg.Files {
			for n, p := range imports(f) {
				pkgImports[n] = p
			}
		}
		for _, f := range pkg.Files {
			imp := imports(f)
			fname := pkg.Fset.Position(f.Pos()).Filename
			rel, _ := filepath.Rel(ix.Root, fname)
			docs := map[*ast.CommentGroup]bool{}
			for _, c := range docComments(f) {
				docs[c] = true
			}
			for _, cg := range f.Comments {
				text := cg.Text()
				line := pkg.Fset.Position(cg.Pos()).Line
				where := func(i int) string { return fmt.Sprintf("%s:%d", rel, line+lineOf(text, i)-1) }
				probs = append(probs, checkQualified(ix, text, where, imp)...)
				probs = append(probs, checkMembers(ix, text, where, pkg)...)
				if !docs[cg] {
					continue
				}
				for _, m := range docPathRE.FindAllStringIndex(text, -1) {
					s := text[m[0]:m[1]]
					i := strings.Index(s, "docs/")
					if s[:i] != RepoDocURL {
						probs = append(probs, problem{where(m[0]), fmt.Sprintf("%s: name the document by its title and link it as %s%s", s, RepoDocURL, s[i:])})
						continue
					}
					if _, err := os.Stat(filepath.Join(ix.Root, filepath.FromSlash(s[i:]))); err != nil {
						probs = append(probs, problem{where(m[0]), fmt.Sprintf("%s: no such document", s)})
					}
				}
				defs := map[string]bool{}
				for _, d := range linkDefRE.FindAllStringSubmatch(text, -1) {
					defs[d[1]] = true
				}
				for _, m := range docLinkRE.FindAllStringSubmatchIndex(text, -1) {
					if defs[strings.Trim(text[m[0]:m[1]][:strings.Index(text[m[0]:m[1]], "]")], "[*")] {
						continue // [Text] with a link definition: a URL link
					}
					if p := docLink(ix, pkg, pkgImports, text, m); p != "" {
						probs = append(probs, problem{where(m[0]), p})
					}
				}
			}
		}
	}
	report(t, probs)
}

// docLink checks one doc link match m in text, written in pkg, as go/doc
// resolves it; it returns the problem, "" when it resolves (or names a
// package outside the module).
func docLink(ix *Index, pkg *Package, imp map[string]string, text string, m []int) string {
	link := text[m[0]:m[1]]
	link = link[:strings.LastIndex(link, "]")+1]
	name := text[m[4]:m[5]]
	member := ""
	if m[6] >= 0 {
		member = text[m[6]:m[7]]
	}
	target := pkg
	if m[2] >= 0 {
		p := strings.TrimSuffix(text[m[2]:m[3]], ".")
		if ip, ok := imp[p]; ok {
			p = ip
		}
		target = ix.Pkgs[p]
		if target == nil {
			if strings.HasPrefix(p, ix.Module) || (!strings.Contains(p, ".") && len(ix.Resolve(p)) > 0) {
				return fmt.Sprintf("%s: package %s is not imported by %s (write its import path)", link, p, pkg.Path)
			}
			return "" // the standard library's, or another module's
		}
	}
	if !target.Names[name] {
		if member == "" && m[2] < 0 {
			// [Name] with member nil may be [Type.Method] written as a
			// field of the local type; only a plain [Name] is checked.
			return fmt.Sprintf("%s: %s declares no %s (go doc shows it as plain text)", link, target.Path, name)
		}
		return fmt.Sprintf("%s: %s declares no %s", link, target.Path, name)
	}
	if member != "" && !ix.HasMember(Ref{target.Path, name}, member) {
		return fmt.Sprintf("%s: %s.%s has no member %s", link, target.Path, name, member)
	}
	return ""
}
