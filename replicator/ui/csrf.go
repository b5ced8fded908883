package ui

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
)

// CSRFCookie is the name of the cookie the CSRF token is bound to, and
// CSRFField the form field that carries the token.
const (
	CSRFCookie = "geo_ui_csrf"
	CSRFField  = "csrf"
)

// csrfNonceLen is the number of random bytes of a CSRF cookie.
const csrfNonceLen = 16

// csrf issues and checks CSRF tokens: a random nonce in an HttpOnly,
// SameSite=Strict cookie, and in every form the HMAC of that nonce under
// the handler's key. A cross-site page can neither read the cookie nor
// compute the HMAC, so it cannot build a form that passes; a nonce an
// attacker planted (a sibling subdomain can set cookies) still needs the
// key's HMAC, which only a page of this handler shows.
type csrf struct{ key []byte }

// token returns the token of nonce.
func (c csrf) token(nonce string) string {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte("geo-ui-csrf\x00"))
	m.Write([]byte(nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// nonce returns the request's cookie nonce, or "" when it has none of the
// right shape.
func nonceOf(r *http.Request) string {
	ck, err := r.Cookie(CSRFCookie)
	if err != nil {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(ck.Value)
	if err != nil || len(b) != csrfNonceLen {
		return ""
	}
	return ck.Value
}

// issue returns the token for the page answering r, setting a new cookie
// on w when r carries none.
func (c csrf) issue(w http.ResponseWriter, r *http.Request) string {
	nonce := nonceOf(r)
	if nonce == "" {
		b := make([]byte, csrfNonceLen)
		_, _ = rand.Read(b) // crypto/rand.Read does not fail
		nonce = base64.RawURLEncoding.EncodeToString(b)
		http.SetCookie(w, &http.Cookie{
			Name: CSRFCookie, Value: nonce, Path: "/",
			HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
		})
	}
	return c.token(nonce)
}

// valid reports whether the posted form of r carries the token of r's
// cookie. r.ParseForm must have run.
func (c csrf) valid(r *http.Request) bool {
	nonce := nonceOf(r)
	got := r.PostForm.Get(CSRFField)
	if nonce == "" || got == "" {
		return false
	}
	return hmac.Equal([]byte(got), []byte(c.token(nonce)))
}
