package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrUnauthorized is returned (wrapped) when a transfer request's
// credentials are missing, malformed, unknown, expired, forged or bound to
// another record. Its messages never contain a secret or a token.
var ErrUnauthorized = errors.New("unauthorized")

// Token timing limits. A secondary signs a fresh token for every request.
const (
	// MaxTokenLifetime is how far in the future a token's exp may be.
	MaxTokenLifetime = 60 * time.Second
	// TokenLeeway is the clock skew tolerated between the sites.
	TokenLeeway = 10 * time.Second
	// MinSecretSize is the shortest secret accepted, in bytes (HS256 wants
	// at least 256 bits of key).
	MinSecretSize = 32
)

// AuthScheme is the Authorization scheme of transfer requests:
// "Authorization: Geo <access_key>:<jwt>".
const AuthScheme = "Geo"

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

// validate reports what makes c unusable; the message never shows the
// secret.
func (c Credentials) validate() error {
	switch {
	case c.Site == "":
		return errors.New("Credentials.Site is empty")
	case c.AccessKey == "" || strings.ContainsAny(c.AccessKey, ": \t\r\n"):
		return errors.New("Credentials.AccessKey is empty or contains ':' or white space")
	case len(c.Secret) < MinSecretSize:
		return fmt.Errorf("Credentials.Secret is shorter than %d bytes", MinSecretSize)
	}
	return nil
}

// tokenClaims are the claims of a transfer token: the record it opens, the
// site it was issued to, and when.
type tokenClaims struct {
	Replicable string           `json:"replicable"`
	ID         int64            `json:"id"`
	Site       string           `json:"site"`
	IssuedAt   *jwt.NumericDate `json:"iat"`
	ExpiresAt  *jwt.NumericDate `json:"exp"`
}

func (c *tokenClaims) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt, nil }
func (c *tokenClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.IssuedAt, nil }
func (c *tokenClaims) GetNotBefore() (*jwt.NumericDate, error)      { return nil, nil }
func (c *tokenClaims) GetIssuer() (string, error)                   { return "", nil }
func (c *tokenClaims) GetSubject() (string, error)                  { return "", nil }
func (c *tokenClaims) GetAudience() (jwt.ClaimStrings, error)       { return nil, nil }

// Authorization returns the value of the Authorization header for a request
// for record id of replicable at time now: "Geo <access_key>:<jwt>", the JWT
// signed with HS256 and valid for MaxTokenLifetime.
func (c Credentials) Authorization(replicable string, id int64, now time.Time) (string, error) {
	if err := c.validate(); err != nil {
		return "", fmt.Errorf("transfer: sign token: %w", err)
	}
	claims := &tokenClaims{
		Replicable: replicable,
		ID:         id,
		Site:       c.Site,
		IssuedAt:   jwt.NewNumericDate(now),
		ExpiresAt:  jwt.NewNumericDate(now.Add(MaxTokenLifetime)),
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(c.Secret)
	if err != nil {
		return "", fmt.Errorf("transfer: sign token: %w", errors.Unwrap(err))
	}
	return AuthScheme + " " + c.AccessKey + ":" + tok, nil
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

// ParseAuthorization splits an Authorization header value of the form
// "Geo <access_key>:<jwt>". It checks the shape only, not the token. The
// error wraps ErrUnauthorized and quotes nothing of the header.
func ParseAuthorization(header string) (accessKey, token string, err error) {
	scheme, rest, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, AuthScheme) {
		return "", "", fmt.Errorf("%w: want the %s scheme", ErrUnauthorized, AuthScheme)
	}
	accessKey, token, ok = strings.Cut(rest, ":")
	if !ok || accessKey == "" || token == "" || strings.ContainsAny(accessKey, " \t\r\n") {
		return "", "", fmt.Errorf("%w: want %s <access_key>:<token>", ErrUnauthorized, AuthScheme)
	}
	if len(token) > 4096 || strings.Count(token, ".") != 2 {
		return "", "", fmt.Errorf("%w: malformed token", ErrUnauthorized)
	}
	return accessKey, token, nil
}

// dummySecret is verified against when the access key is unknown, so an
// unknown key costs the same work as a known one.
var dummySecret = [MinSecretSize]byte{}

// Verifier checks transfer requests' Authorization headers on the primary.
type Verifier struct {
	// Secrets looks up access keys. Required.
	Secrets Secrets
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verify checks that header authorizes a request for record id of
// replicable, and returns the site of the secondary. The token must be
// HS256 (no other algorithm, "none" included), signed with the access key's
// secret, carry iat and exp with exp no further than MaxTokenLifetime (+
// TokenLeeway) ahead and not past (- TokenLeeway), iat not in the future
// (+ TokenLeeway), and claims equal to replicable, id and the access key's
// site. Every failure wraps ErrUnauthorized; the message says which check
// failed (for the primary's logs) but never contains the secret or the
// token.
func (v Verifier) Verify(ctx context.Context, header, replicable string, id int64) (site string, err error) {
	accessKey, token, err := ParseAuthorization(header)
	if err != nil {
		return "", err
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	site, secret, lookupErr := v.Secrets.Secret(ctx, accessKey)
	known := lookupErr == nil && len(secret) >= MinSecretSize
	if !known {
		secret = dummySecret[:]
	}
	var claims tokenClaims
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(TokenLeeway),
		jwt.WithTimeFunc(now),
		jwt.WithStrictDecoding(),
	)
	_, perr := parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return secret, nil })
	switch {
	case lookupErr != nil && !errors.Is(lookupErr, ErrUnknownAccessKey):
		return "", fmt.Errorf("%w: access key lookup: %w", ErrUnauthorized, lookupErr)
	case !known:
		return "", fmt.Errorf("%w: unknown access key", ErrUnauthorized)
	case perr != nil:
		return "", fmt.Errorf("%w: %s", ErrUnauthorized, tokenProblem(perr))
	case claims.IssuedAt == nil:
		return "", fmt.Errorf("%w: token has no iat", ErrUnauthorized)
	case claims.ExpiresAt.Time.After(now().Add(MaxTokenLifetime + TokenLeeway)):
		return "", fmt.Errorf("%w: token expires too far in the future", ErrUnauthorized)
	case claims.Site != site:
		return "", fmt.Errorf("%w: token site is not the access key's", ErrUnauthorized)
	case claims.Replicable != replicable || claims.ID != id:
		return "", fmt.Errorf("%w: token is for another record", ErrUnauthorized)
	}
	return site, nil
}

// tokenProblem names what the JWT library rejected, without any of the
// token's content.
func tokenProblem(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature or algorithm"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "unverifiable token"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "token lacks a required claim"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token issued in the future"
	default:
		return "invalid token"
	}
}
