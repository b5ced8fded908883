package main

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/lib/pq"
)

// FuzzParseAfter checks the parser of geoctl's --after cursor ("TYPE:ID",
// or "ID" with --type), the CLI's one hand-written parser of record ids
// (--id goes through pflag's int64 slice): it never panics, an error is a
// usage error (exit code 2), and an accepted cursor prints back to one
// that parses to the same key.
func FuzzParseAfter(f *testing.F) {
	for _, s := range []struct{ after, typ string }{
		{"item:5", ""}, {"5", "item"}, {"5", ""}, {":5", ""}, {"item:", ""}, {"item:-1", ""}, {"item:+1", ""},
		{"item:9223372036854775808", ""}, {"a:b:3", ""}, {"item: 5", ""}, {"", "item"}, {"item:0x10", ""},
	} {
		f.Add(s.after, s.typ)
	}
	f.Fuzz(func(t *testing.T, after, typ string) {
		k, err := parseAfter(after, typ)
		if err != nil {
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("parseAfter(%q, %q) = %v, want a usage error", after, typ, err)
			}
			return
		}
		if k.Replicable == "" {
			t.Fatalf("parseAfter(%q, %q) accepted an empty type", after, typ)
		}
		again, err := parseAfter(k.Replicable+":"+strconv.FormatInt(k.ModelID, 10), "")
		if err != nil || again != k {
			t.Fatalf("parseAfter(%q, %q) = %+v, which prints to a cursor parsing to %+v, %v", after, typ, k, again, err)
		}
	})
}

// FuzzCheckConn checks geoctl's reading of a connection string against
// lib/pq's: checkConn rejects a key=value string exactly when lib/pq's
// parser does (so lib/pq never gets to quote one in its error), and the
// string it shows has every password replaced and nothing else changed.
func FuzzCheckConn(f *testing.F) {
	for _, s := range []string{
		"host=h password=pw", "host=h password='p w\\'x' user=u", `host=h password=p\ w`, "host=h password = pw",
		"host=h password=pw x", "host=h password='pw", `host=h password=pw\`, "password=", "host=h sslpassword=pw",
		"postgres://u:pw@h/db?sslmode=disable&password=pw2", "postgresql://u@h/db?PASSWORD=pw", "postgres://u:p/w@h/db",
		"postgres://u:%zz@h/db", "mysql://u:pw@h/db", "host=h\u00a0password=pw", "k='\u00e0' password=\u00e0b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		shown, err := checkConn(s)
		if urlScheme.MatchString(s) {
			if err != nil {
				return
			}
			u, perr := url.Parse(shown)
			if perr != nil {
				t.Fatalf("checkConn(%q) shows %q, which does not parse: %v", s, shown, perr)
			}
			if pw, has := u.User.Password(); has && pw != redacted {
				t.Fatalf("checkConn(%q) shows %q with a password", s, shown)
			}
			for k, vs := range u.Query() {
				if isSecretParam(k) && (len(vs) != 1 || vs[0] != redacted) {
					t.Fatalf("checkConn(%q) shows %q with %s=%q", s, shown, k, vs)
				}
			}
			return
		}
		_, pqErr := pq.NewConfig(s)
		pqParse := pqErr != nil && (strings.Contains(pqErr.Error(), `missing "=" after`) ||
			strings.Contains(pqErr.Error(), "missing character after backslash") ||
			strings.Contains(pqErr.Error(), "unterminated quoted string"))
		if (err != nil) != pqParse {
			t.Fatalf("checkConn(%q) = %v, lib/pq's parser: %v", s, err, pqErr)
		}
		if err != nil {
			return
		}
		in, _ := conninfoValues(s)
		out, err := conninfoValues(shown)
		if err != nil || len(out) != len(in) {
			t.Fatalf("checkConn(%q) shows %q, which parses to %d pairs (%v), want %d", s, shown, len(out), err, len(in))
		}
		for i := range in {
			got, was := shown[out[i].start:out[i].end], s[in[i].start:in[i].end]
			if out[i].key != in[i].key || (isSecretParam(in[i].key) && got != "'"+redacted+"'") ||
				(!isSecretParam(in[i].key) && got != was) {
				t.Fatalf("checkConn(%q) shows %q: pair %d is %s=%s, was %s=%s", s, shown, i, out[i].key, got, in[i].key, was)
			}
		}
	})
}

// FuzzRedactText puts a password in every form a connection string can
// carry it (URL userinfo and query, key=value quoted and unquoted), alone,
// quoted by %q and inside an error text, and checks redactText leaves no
// trace of it in the encoding that form uses.
func FuzzRedactText(f *testing.F) {
	for _, pw := range []string{"s3cr3t", "p@ss/w:rd", "a b'c\\d\"e", "pass&word=x#y", "password=xxxxx", "\u00e0\u00a0\u00e9"} {
		f.Add(pw)
	}
	f.Fuzz(func(t *testing.T, pw string) {
		if len(pw) < 4 {
			return
		}
		quoted := "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(pw) + "'"
		var unq strings.Builder
		for _, r := range pw {
			if unicode.IsSpace(r) || strings.ContainsRune(`\'"`, r) {
				unq.WriteByte('\\')
			}
			unq.WriteRune(r)
		}
		forms := []struct{ text, enc string }{
			{"postgres://" + url.UserPassword("u", pw).String() + "@h:5432/db?sslmode=disable", url.UserPassword("u", pw).String()[2:]},
			{"postgres://u@h/db?sslmode=disable&password=" + url.QueryEscape(pw) + "&x=1", url.QueryEscape(pw)},
			{"postgres://u@h/db?SslPassword=" + url.QueryEscape(pw), url.QueryEscape(pw)},
			{"host=h password=" + quoted + " user=u", quoted[1 : len(quoted)-1]},
			{"host=h PASSWORD = " + unq.String() + " user=u", unq.String()},
		}
		for _, fm := range forms {
			skeleton := strings.Replace(fm.text, fm.enc, "", 1)
			for _, text := range []string{fm.text, fmt.Sprintf("%q", fm.text), "pq: connect " + fm.text + ": refused"} {
				for _, secret := range []string{fm.enc, fmt.Sprintf("%q", fm.enc)[1 : len(fmt.Sprintf("%q", fm.enc))-1]} {
					if len(secret) < 4 || strings.Contains(skeleton, secret) || strings.Contains("pq: connect : refused xxxxx", secret) {
						continue
					}
					if got := redactText(text); strings.Contains(got, secret) {
						t.Fatalf("redactText(%q) = %q, shows %q", text, got, secret)
					}
				}
			}
		}
	})
}
