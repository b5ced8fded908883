package main

import (
	"bytes"
	"errors"
	"io"
	"net/url"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// redacted replaces a password wherever geoctl prints one.
const redacted = "xxxxx"

// Secret connection parameters, compared without case: libpq's password
// and sslpassword (the passphrase of the client key).
var secretParams = []string{"password", "sslpassword"}

func isSecretParam(key string) bool {
	for _, p := range secretParams {
		if strings.EqualFold(key, p) {
			return true
		}
	}
	return false
}

var (
	// textUserinfo is a URL's "scheme://user:password@" in free text. The
	// password runs to the last '@' before white space or a quote, so a
	// password with a raw '@', '/' or ':' (an invalid URL) is covered
	// whole; the price is that an '@' later in the URL hides what lies
	// between.
	textUserinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://[^\s"'@/?#:]*):[^\s"']*@`)
	// textPasswordKey is a password parameter in free text, as a URL query
	// parameter or a key=value pair, in any case ("PGPASSWORD=" too).
	textPasswordKey = regexp.MustCompile(`(?i)(?:ssl)?password\s*=\s*`)
	// urlScheme is how a URL starts.
	urlScheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.\-]*://`)
)

// redactText hides every password in s, a message or an output line: a
// URL's userinfo password, password and sslpassword parameters in any
// case (URL query parameters end at '&', '#', white space or a quote;
// key=value values at white space or an unescaped double quote, with
// libpq's backslash escapes; quoted values at their closing quote).
// redactText(redactText(s)) == redactText(s).
func redactText(s string) string {
	s = textUserinfo.ReplaceAllString(s, "${1}:"+redacted+"@")
	if !textPasswordKey.MatchString(s) {
		return s
	}
	var b strings.Builder
	for {
		loc := textPasswordKey.FindStringIndex(s)
		if loc == nil {
			b.WriteString(s)
			return b.String()
		}
		inQuery := loc[0] > 0 && strings.IndexByte("?&;", s[loc[0]-1]) >= 0
		b.WriteString(s[:loc[1]])
		rest := s[loc[1]:]
		n := valueLen(rest, inQuery)
		if n > 0 && rest[0] == '\'' {
			b.WriteString("'" + redacted + "'")
		} else {
			b.WriteString(redacted)
		}
		s = rest[n:]
	}
}

// valueLen is the length of the parameter value s starts with (see
// redactText).
func valueLen(s string, inQuery bool) int {
	if strings.HasPrefix(s, "'") {
		for i := 1; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
			case '\'':
				return i + 1
			}
		}
		return len(s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			i++
			if i >= len(s) {
				return len(s)
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == '"':
			return i
		case inQuery && (c == '&' || c == '#' || c == '\''):
			return i
		}
	}
	return len(s)
}

// Errors of checkConn. They never quote the connection string or a part
// of it: a part may be a password.
var (
	errConnScheme = errors.New("not a postgres:// or postgresql:// URL nor key=value pairs")
	errConnURL    = errors.New("not a valid URL (percent-encode special characters of the user name and password, e.g. @ as %40, / as %2F)")
	errConnEquals = errors.New(`not valid key=value pairs: a key without "=" (quote a value holding spaces in single quotes)`)
	errConnQuote  = errors.New("not valid key=value pairs: a quoted value is not closed")
	errConnEscape = errors.New("not valid key=value pairs: a backslash ends the string")
)

// checkConn checks a connection string the way lib/pq will parse it
// (postgres:// and postgresql:// URLs, otherwise libpq key=value pairs)
// and returns it with every password replaced, for messages. lib/pq's own
// errors for a string it cannot parse quote a part of it, which may be a
// password: geoctl checks first and says what is wrong without quoting.
func checkConn(s string) (shown string, err error) {
	if urlScheme.MatchString(s) {
		// lib/pq takes only these (lowercase) schemes for URLs; it would
		// parse any other as key=value pairs and quote it in its error.
		if !strings.HasPrefix(s, "postgres://") && !strings.HasPrefix(s, "postgresql://") {
			return "", errConnScheme
		}
		u, err := url.Parse(s)
		if err != nil {
			return "", errConnURL
		}
		return redactURL(u), nil
	}
	spans, err := conninfoValues(s)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	last := 0
	for _, sp := range spans {
		if !isSecretParam(sp.key) {
			continue
		}
		b.WriteString(s[last:sp.start])
		b.WriteString("'" + redacted + "'")
		last = sp.end
	}
	b.WriteString(s[last:])
	return b.String(), nil
}

// redactURL is u with its userinfo password and password parameters
// replaced, the other parameters in their order.
func redactURL(u *url.URL) string {
	c := *u
	if c.User != nil {
		if _, has := c.User.Password(); has {
			c.User = url.UserPassword(c.User.Username(), redacted)
		}
	}
	if c.RawQuery != "" {
		parts := strings.Split(c.RawQuery, "&")
		for i, p := range parts {
			k, _, _ := strings.Cut(p, "=")
			if uk, err := url.QueryUnescape(k); err == nil {
				k = uk
			}
			if isSecretParam(k) {
				parts[i] = k + "=" + redacted
			}
		}
		c.RawQuery = strings.Join(parts, "&")
	}
	return c.String()
}

// conninfoSpan is where a key=value pair's value lies in a connection
// string (quotes included).
type conninfoSpan struct {
	key        string
	start, end int
}

// conninfoValues parses s as libpq key=value pairs, the grammar of lib/pq's
// parseOpts (over runes, white space as unicode.IsSpace): keys end at
// white space or '='; a value is a quoted string ('...' with backslash
// escapes) or runs to white space (a backslash escapes a character);
// "key =" at the end is an empty value.
func conninfoValues(s string) ([]conninfoSpan, error) {
	var spans []conninfoSpan
	i := 0
	peek := func() (rune, int) { return utf8.DecodeRuneInString(s[i:]) }
	skip := func() {
		for i < len(s) {
			r, n := peek()
			if !unicode.IsSpace(r) {
				return
			}
			i += n
		}
	}
	for {
		skip()
		if i >= len(s) {
			return spans, nil
		}
		k := i
		for i < len(s) {
			r, n := peek()
			if unicode.IsSpace(r) || r == '=' {
				break
			}
			i += n
		}
		key := s[k:i]
		skip()
		if i >= len(s) || s[i] != '=' {
			return nil, errConnEquals
		}
		i++
		skip()
		start := i
		if i < len(s) && s[i] == '\'' {
			i++
			for {
				if i >= len(s) {
					return nil, errConnQuote
				}
				r, n := peek()
				i += n
				if r == '\'' {
					break
				}
				if r == '\\' && i < len(s) {
					_, n = peek()
					i += n
				}
			}
		} else {
			for i < len(s) {
				r, n := peek()
				if unicode.IsSpace(r) {
					break
				}
				i += n
				if r == '\\' {
					if i >= len(s) {
						return nil, errConnEscape
					}
					_, n = peek()
					i += n
				}
			}
		}
		spans = append(spans, conninfoSpan{key: key, start: start, end: i})
	}
}

// redactWriter writes lines to w with every password hidden (redactText).
// It holds a line until its newline or Flush, so a password split over
// two writes is still seen whole.
type redactWriter struct {
	w   io.Writer
	buf []byte
}

func (r *redactWriter) Write(p []byte) (int, error) {
	r.buf = append(r.buf, p...)
	if i := bytes.LastIndexByte(r.buf, '\n'); i >= 0 {
		if _, err := io.WriteString(r.w, redactText(string(r.buf[:i+1]))); err != nil {
			return 0, err
		}
		r.buf = append(r.buf[:0], r.buf[i+1:]...)
	}
	return len(p), nil
}

// Flush writes a last line without a newline.
func (r *redactWriter) Flush() error {
	if len(r.buf) == 0 {
		return nil
	}
	_, err := io.WriteString(r.w, redactText(string(r.buf)))
	r.buf = r.buf[:0]
	return err
}
