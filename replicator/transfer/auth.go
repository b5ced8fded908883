package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
)

// ErrUnauthorized is returned (wrapped) when a transfer request's
// credentials are missing, malformed, unknown, expired, forged or bound to
// another record. Its messages never contain a secret or a token.
var ErrUnauthorized = errors.New("unauthorized")

// Token timing limits. A secondary signs a fresh token for every request.
const (
	// TokenLifetimeMax is how far in the future a token's exp may be.
	TokenLifetimeMax = 60 * time.Second
	// TokenLeeway is the clock skew tolerated between the sites.
	TokenLeeway = 10 * time.Second
	// SecretSizeMin is the shortest secret accepted, in bytes (HS256 wants
	// at least 256 bits of key).
	SecretSizeMin = 32
)

// Credentials are what one secondary site holds to fetch blobs from the
// primary: its site name, its access key (public, identifies the
// secondary) and its secret (shared with the primary, never sent).
//
// The secret never leaves through a printing path: every fmt verb (%v,
// %+v, %#v, %s, %d, %x...) prints String or GoString, json.Marshal
// omits it (json:"-"), slog logs LogValue (site and access key), and zap's
// Any logs String. A struct holding Credentials in an exported field
// prints it the same ways; an unexported field is printed by fmt through
// reflection, which no method can intercept, so never print a struct that
// holds Credentials in an unexported field.
type Credentials struct {
	Site      string
	AccessKey string
	Secret    []byte `json:"-"`
}

// redactedSecret stands for the secret wherever Credentials are printed.
const redactedSecret = "<redacted>"

// String describes the credentials without the secret, so logging them by
// accident leaks nothing.
func (c Credentials) String() string {
	return fmt.Sprintf("blob.Credentials{Site: %q, AccessKey: %q, Secret: %s}", c.Site, c.AccessKey, redactedSecret)
}

// GoString is String, for %#v.
func (c Credentials) GoString() string { return c.String() }

// Format implements fmt.Formatter: every verb prints String (GoString for
// %#v), so a verb that bypasses Stringer (%d, %o, %b...) cannot print the
// secret's bytes either.
func (c Credentials) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, c.GoString())
		return
	}
	io.WriteString(f, c.String())
}

// LogValue implements slog.LogValuer: a group of the site and the access
// key, the secret shown as "<redacted>".
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("site", c.Site), slog.String("access_key", c.AccessKey),
		slog.String("secret", redactedSecret))
}

// Validate reports what makes c unusable (an empty site, an empty access
// key or one with ':' or white space, a secret shorter than
// SecretSizeMin); the message never shows the secret.
func (c Credentials) Validate() error {
	switch {
	case c.Site == "":
		return errors.New("Credentials.Site is empty")
	case c.AccessKey == "" || strings.ContainsAny(c.AccessKey, ": \t\r\n"):
		return errors.New("Credentials.AccessKey is empty or contains ':' or white space")
	case len(c.Secret) < SecretSizeMin:
		return fmt.Errorf("Credentials.Secret is shorter than %d bytes", SecretSizeMin)
	}
	return nil
}

// Secrets looks up the secret of a secondary's access key on the primary.
type Secrets interface {
	// Secret returns the site an access key was issued to and its secret,
	// or an error (any error is answered with 401). The error must not
	// contain the secret.
	Secret(ctx context.Context, accessKey string) (site string, secret []byte, err error)
}

// ErrUnknownAccessKey is returned (wrapped) by StaticSecrets for an access
// key it does not hold.
var ErrUnknownAccessKey = errors.New("unknown access key")

// StaticSecrets is a Secrets held in memory, keyed by access key. It must
// not be modified while in use.
type StaticSecrets map[string]Credentials

// NewStaticSecrets returns the StaticSecrets holding creds.
func NewStaticSecrets(creds ...Credentials) StaticSecrets {
	s := make(StaticSecrets, len(creds))
	for _, c := range creds {
		s[c.AccessKey] = c
	}
	return s
}

// Secret implements Secrets.
func (s StaticSecrets) Secret(_ context.Context, accessKey string) (string, []byte, error) {
	c, ok := s[accessKey]
	if !ok {
		return "", nil, ErrUnknownAccessKey
	}
	return c.Site, c.Secret, nil
}
