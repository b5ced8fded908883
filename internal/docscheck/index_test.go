package docscheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Index is what the module's source declares: per package, its exported
// top-level names and the members (fields, methods) of its types.
type Index struct {
	Module string
	Root   string
	// Pkgs maps an import path to its package.
	Pkgs map[string]*Package
	// byName maps a package's name (its path's last element) to the
	// packages of that name.
	byName map[string][]*Package
	// Tests holds the names of the Test, Benchmark, Fuzz and Example
	// functions of every _test.go file.
	Tests map[string]bool
}

// Package is one package of the module.
type Package struct {
	Path  string
	Dir   string
	Name  string
	Names map[string]bool
	Types map[string]*Type
	// Files are the parsed non-test files, for comment checks.
	Files []*ast.File
	Fset  *token.FileSet
}

// Type is one declared type.
type Type struct {
	Members map[string]bool
	// Embeds are the types whose members are promoted (local or in
	// another package of the module).
	Embeds []Ref
	// Open is set when the type embeds or aliases a type outside the
	// module: any member may exist.
	Open bool
}

// Ref names a type: its package's import path and its name.
type Ref struct{ Pkg, Name string }

// Public reports whether p is part of geo's public API (not internal, not
// a command, not an example).
func (p *Package) Public(module string) bool {
	rel := strings.TrimPrefix(p.Path, module)
	rel = strings.TrimPrefix(rel, "/")
	for _, seg := range strings.Split(rel, "/") {
		if seg == "internal" || seg == "cmd" || seg == "examples" {
			return false
		}
	}
	return true
}

// Load parses every non-test Go file under root (the module root).
func Load(root string) (*Index, error) {
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return nil, err
	}
	var module string
	for _, line := range strings.Split(string(mod), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			module = strings.TrimSpace(rest)
			break
		}
	}
	ix := &Index{Module: module, Root: root, Pkgs: map[string]*Package{}, byName: map[string][]*Package{}, Tests: map[string]bool{}}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") {
			return nil
		}
		if strings.HasSuffix(p, "_test.go") {
			f, err := parser.ParseFile(token.NewFileSet(), p, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			for _, d := range f.Decls {
				if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil {
					ix.Tests[fd.Name.Name] = true
				}
			}
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		dir := filepath.Dir(p)
		rel, _ := filepath.Rel(root, dir)
		ip := module
		if rel != "." {
			ip = module + "/" + filepath.ToSlash(rel)
		}
		pkg := ix.Pkgs[ip]
		if pkg == nil {
			pkg = &Package{Path: ip, Dir: dir, Name: f.Name.Name, Names: map[string]bool{}, Types: map[string]*Type{}, Fset: fset}
			ix.Pkgs[ip] = pkg
		}
		pkg.Files = append(pkg.Files, f)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, pkg := range ix.Pkgs {
		for _, f := range pkg.Files {
			ix.declare(pkg, f)
		}
		ix.byName[path.Base(pkg.Path)] = append(ix.byName[path.Base(pkg.Path)], pkg)
	}
	return ix, nil
}

func (pkg *Package) typ(name string) *Type {
	t := pkg.Types[name]
	if t == nil {
		t = &Type{Members: map[string]bool{}}
		pkg.Types[name] = t
	}
	return t
}

// imports maps the names a file uses for its imports to their paths.
func imports(f *ast.File) map[string]string {
	m := map[string]string{}
	for _, is := range f.Imports {
		p, _ := strconv.Unquote(is.Path.Value)
		name := path.Base(p)
		if is.Name != nil {
			name = is.Name.Name
		}
		m[name] = p
	}
	return m
}

func (ix *Index) declare(pkg *Package, f *ast.File) {
	imp := imports(f)
	// ref resolves a type expression to a Ref; ok is false for a type
	// outside the module (or one too complex to follow).
	ref := func(e ast.Expr) (Ref, bool) {
		for {
			switch x := e.(type) {
			case *ast.StarExpr:
				e = x.X
				continue
			case *ast.IndexExpr:
				e = x.X
				continue
			case *ast.Ident:
				return Ref{pkg.Path, x.Name}, true
			case *ast.SelectorExpr:
				id, ok := x.X.(*ast.Ident)
				if !ok {
					return Ref{}, false
				}
				p := imp[id.Name]
				if !strings.HasPrefix(p, ix.Module) {
					return Ref{}, false
				}
				return Ref{p, x.Sel.Name}, true
			}
			return Ref{}, false
		}
	}
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil {
				if d.Name.IsExported() {
					pkg.Names[d.Name.Name] = true
				}
				continue
			}
			if r, ok := ref(d.Recv.List[0].Type); ok && d.Name.IsExported() {
				pkg.typ(r.Name).Members[d.Name.Name] = true
			}
		case *ast.GenDecl:
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.ValueSpec:
					for _, n := range s.Names {
						if n.IsExported() {
							pkg.Names[n.Name] = true
						}
					}
				case *ast.TypeSpec:
					if s.Name.IsExported() {
						pkg.Names[s.Name.Name] = true
					}
					t := pkg.typ(s.Name.Name)
					if s.Assign.IsValid() { // an alias: the target's members
						if r, ok := ref(s.Type); ok {
							t.Embeds = append(t.Embeds, r)
						} else {
							t.Open = true
						}
						continue
					}
					var fields []*ast.Field
					switch tt := s.Type.(type) {
					case *ast.StructType:
						fields = tt.Fields.List
					case *ast.InterfaceType:
						fields = tt.Methods.List
					case *ast.Ident, *ast.SelectorExpr: // a defined type over another: no members promoted
					}
					for _, fl := range fields {
						if len(fl.Names) == 0 { // embedded
							r, ok := ref(fl.Type)
							if !ok {
								t.Open = true
								continue
							}
							t.Members[r.Name] = true
							t.Embeds = append(t.Embeds, r)
							continue
						}
						for _, n := range fl.Names {
							if n.IsExported() {
								t.Members[n.Name] = true
							}
						}
					}
				}
			}
		}
	}
}

// HasMember reports whether type r has member m, directly or promoted.
func (ix *Index) HasMember(r Ref, m string) bool {
	return ix.hasMember(r, m, map[Ref]bool{})
}

func (ix *Index) hasMember(r Ref, m string, seen map[Ref]bool) bool {
	if seen[r] {
		return false
	}
	seen[r] = true
	pkg := ix.Pkgs[r.Pkg]
	if pkg == nil {
		return true // outside the module: not ours to check
	}
	t := pkg.Types[r.Name]
	if t == nil {
		return false
	}
	if t.Open || t.Members[m] {
		return true
	}
	for _, e := range t.Embeds {
		if ix.hasMember(e, m, seen) {
			return true
		}
	}
	return false
}

// Resolve finds the packages a documentation reference's package part
// names: a path relative to the module ("blob/dirblob"), the module path
// itself followed by one, or a package name ("dirblob"). It returns nil
// when no package of the module matches: the reference is someone else's.
func (ix *Index) Resolve(p string) []*Package {
	if pkg := ix.Pkgs[p]; pkg != nil {
		return []*Package{pkg}
	}
	if pkg := ix.Pkgs[ix.Module+"/"+p]; pkg != nil {
		return []*Package{pkg}
	}
	if strings.Contains(p, "/") {
		return nil
	}
	return ix.byName[p]
}

// TypesNamed returns the refs of every type called name in the module,
// public packages first.
func (ix *Index) TypesNamed(name string) []Ref {
	var out []Ref
	for _, pkg := range ix.Pkgs {
		if _, ok := pkg.Types[name]; ok && pkg.Names[name] {
			out = append(out, Ref{pkg.Path, name})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pkg < out[j].Pkg })
	return out
}

// Exported reports whether name is exported anywhere in the module: a
// top-level name or a member of a type.
func (ix *Index) Exported(name string) bool {
	for _, pkg := range ix.Pkgs {
		if pkg.Names[name] {
			return true
		}
		for _, t := range pkg.Types {
			if t.Members[name] {
				return true
			}
		}
	}
	return false
}
