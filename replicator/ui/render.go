package ui

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

//go:embed templates static
var assets embed.FS

// pageNames are the pages, each a template of templates/ executed with
// layout.html.
var pageNames = []string{"overview", "failures", "record", "checksums", "error"}

func parsePages() (map[string]*template.Template, error) {
	out := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, err
		}
		out[name] = t
	}
	return out, nil
}

// staticHandler serves the embedded assets; they change only with the
// binary, so a browser may keep them for an hour.
func staticHandler(files fs.FS) http.Handler {
	fsrv := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		fsrv.ServeHTTP(w, r)
	})
}

// page is what every page's template gets.
type page struct {
	Title   string // the site's (Config.Title)
	Heading string // this page's
	// Base is the relative path from this page to the handler's root
	// ("./", "../../"): every link is relative, so the handler works
	// under any prefix.
	Base string
	// Refresh is the live refresh interval in milliseconds.
	Refresh int64
	CSRF    string
	CanAct  bool
	Flash   string
	Health  string // the status report's verdict; "" when there is none
	Now     time.Time
	Errors  []string
	Body    any
}

// newPage starts the page answering r.
func (h *Handler) newPage(w http.ResponseWriter, r *http.Request, heading string) *page {
	p := &page{
		Title: h.cfg.Title, Heading: heading, Base: baseOf(r.URL.Path),
		Refresh: h.cfg.RefreshInterval.Milliseconds(), Now: h.cfg.Now(),
	}
	if h.actions && h.cfg.Authorize(r) {
		p.CanAct = true
		p.CSRF = h.csrf.issue(w, r)
	}
	return p
}

// baseOf returns the relative path from the page at path (as the handler
// sees it, the host's prefix stripped) to the handler's root.
func baseOf(path string) string {
	n := strings.Count(path, "/") - 1
	if n <= 0 {
		return "./"
	}
	return strings.Repeat("../", n)
}

// render writes page p with template name and HTTP status code, timing
// the template as the Server-Timing header says ("db" is the time from
// start to the rendering).
func (h *Handler) render(w http.ResponseWriter, name string, code int, p *page, start time.Time) {
	dbDone := time.Now()
	var buf bytes.Buffer
	if err := h.pages[name].Execute(&buf, p); err != nil {
		h.log.Error("ui: render " + name + ": " + err.Error())
		http.Error(w, "ui: the page could not be rendered: "+err.Error(), http.StatusInternalServerError)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Server-Timing", fmt.Sprintf("db;dur=%.2f, render;dur=%.2f",
		float64(dbDone.Sub(start).Microseconds())/1000, float64(time.Since(dbDone).Microseconds())/1000))
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// fail renders the error page with code and msg.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	p := h.newPage(w, r, http.StatusText(code))
	p.Refresh = 0
	p.Body = msg
	h.render(w, "error", code, p, time.Now())
}

var funcs = template.FuncMap{
	"num":     num,
	"pct":     pct,
	"dur":     dur,
	"seconds": seconds,
	"ago":     ago,
	"iso":     iso,
	"bytes":   byteSize,
	"join":    strings.Join,
	"pctOf":   pctOf,
	"msec":    func(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond },
	"sum":     sum,
	"short":   short,
	"rows":    rows,
}

// rows says "1 row" or "N rows".
func rows(n int64) string {
	if n == 1 {
		return "1 row"
	}
	return num(n) + " rows"
}

// sum adds a map's values (syncs in flight per type).
func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// short cuts a checksum to its first 16 digits and an ellipsis.
func short(s string) string {
	if len(s) <= 16 {
		return s
	}
	return s[:16] + "…"
}

// num formats n with thousands separators: 1,000,000.
func num(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// pct formats a percentage: one decimal below 100, and never 100 for
// less than all.
func pct(p float64) string {
	switch {
	case p >= 100:
		return "100%"
	case p > 99.9:
		return "99.9%"
	case p > 0 && p < 0.1:
		return "<0.1%"
	}
	return strconv.FormatFloat(p, 'f', 1, 64) + "%"
}

// pctOf is part as a percentage of whole (0 when whole is 0).
func pctOf(part, whole int64) float64 {
	if whole <= 0 {
		return 0
	}
	return 100 * float64(part) / float64(whole)
}

// dur formats d rounded to what an operator reads: 3m10s, 2h5m, 850ms.
func dur(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + dur(-d)
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	}
	return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
}

// seconds formats a number of seconds as dur does.
func seconds(s float64) string {
	if math.IsNaN(s) || math.IsInf(s, 0) {
		return "?"
	}
	return dur(time.Duration(s * float64(time.Second)))
}

// ago says how long before now t was: "3m10s ago", "-" for the zero time.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d < 0 {
		return "in " + dur(-d)
	}
	return dur(d) + " ago"
}

// iso is t in UTC, RFC 3339, "" for the zero time.
func iso(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// byteSize formats n bytes: 512 B, 4.0 KiB, 3.2 MiB.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// segment is one part of a stacked bar, in percent of its width.
type segment struct {
	Class string
	X, W  string // SVG percentages
	Label string
}

// part is an input of bar: a count and how to draw it.
type part struct {
	Class, Label string
	N            int64
}

// bar lays parts out side by side over whole (parts beyond it are cut).
func bar(whole int64, parts ...part) []segment {
	if whole <= 0 {
		return nil
	}
	var out []segment
	x := 0.0
	for _, p := range parts {
		if p.N <= 0 {
			continue
		}
		w := math.Min(100*float64(p.N)/float64(whole), 100-x)
		if w <= 0 {
			break
		}
		out = append(out, segment{Class: p.Class, Label: p.Label,
			X: strconv.FormatFloat(x, 'f', 3, 64) + "%", W: strconv.FormatFloat(w, 'f', 3, 64) + "%"})
		x += w
	}
	return out
}
