package xfer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/geoframework/geo/replicator/transfer"
	"github.com/golang-jwt/jwt/v5"
)

// AuthScheme is the Authorization scheme of transfer requests:
// "Authorization: Geo <access_key>:<jwt>".
const AuthScheme = "Geo"

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
// by c for record id of replicable at time now: "Geo <access_key>:<jwt>",
// the JWT signed with HS256 and valid for transfer.TokenLifetimeMax.
func Authorization(c transfer.Credentials, replicable string, id int64, now time.Time) (string, error) {
	if err := c.Validate(); err != nil {
		return "", fmt.Errorf("transfer: sign token: %w", err)
	}
	claims := &tokenClaims{
		Replicable: replicable,
		ID:         id,
		Site:       c.Site,
		IssuedAt:   jwt.NewNumericDate(now),
		ExpiresAt:  jwt.NewNumericDate(now.Add(transfer.TokenLifetimeMax)),
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(c.Secret)
	if err != nil {
		return "", fmt.Errorf("transfer: sign token: %w", errors.Unwrap(err))
	}
	return AuthScheme + " " + c.AccessKey + ":" + tok, nil
}

// ParseAuthorization splits an Authorization header value of the form
// "Geo <access_key>:<jwt>". It checks the shape only, not the token. The
// error wraps transfer.ErrUnauthorized and quotes nothing of the header.
func ParseAuthorization(header string) (accessKey, token string, err error) {
	scheme, rest, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, AuthScheme) {
		return "", "", fmt.Errorf("%w: want the %s scheme", transfer.ErrUnauthorized, AuthScheme)
	}
	accessKey, token, ok = strings.Cut(rest, ":")
	if !ok || accessKey == "" || token == "" || strings.ContainsAny(accessKey, " \t\r\n") {
		return "", "", fmt.Errorf("%w: want %s <access_key>:<token>", transfer.ErrUnauthorized, AuthScheme)
	}
	if len(token) > 4096 || strings.Count(token, ".") != 2 {
		return "", "", fmt.Errorf("%w: malformed token", transfer.ErrUnauthorized)
	}
	return accessKey, token, nil
}

// dummySecret is verified against when the access key is unknown, so an
// unknown key costs the same work as a known one.
var dummySecret = [transfer.SecretSizeMin]byte{}

// Verifier checks transfer requests' Authorization headers on the primary.
type Verifier struct {
	// transfer.Secrets looks up access keys. Required.
	Secrets transfer.Secrets
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verify checks that header authorizes a request for record id of
// replicable, and returns the site of the secondary. The token must be
// HS256 (no other algorithm, "none" included), signed with the access key's
// secret, carry iat and exp with exp no further than transfer.TokenLifetimeMax (+
// transfer.TokenLeeway) ahead and not past (- transfer.TokenLeeway), iat not in the future
// (+ transfer.TokenLeeway), and claims equal to replicable, id and the access key's
// site. Every failure wraps transfer.ErrUnauthorized; the message says which check
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
	known := lookupErr == nil && len(secret) >= transfer.SecretSizeMin
	if !known {
		secret = dummySecret[:]
	}
	var claims tokenClaims
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(transfer.TokenLeeway),
		jwt.WithTimeFunc(now),
		jwt.WithStrictDecoding(),
	)
	_, perr := parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return secret, nil })
	switch {
	case lookupErr != nil && !errors.Is(lookupErr, transfer.ErrUnknownAccessKey):
		return "", fmt.Errorf("%w: access key lookup: %w", transfer.ErrUnauthorized, lookupErr)
	case !known:
		return "", fmt.Errorf("%w: unknown access key", transfer.ErrUnauthorized)
	case perr != nil:
		return "", fmt.Errorf("%w: %s", transfer.ErrUnauthorized, tokenProblem(perr))
	case claims.IssuedAt == nil:
		return "", fmt.Errorf("%w: token has no iat", transfer.ErrUnauthorized)
	case claims.ExpiresAt.Time.After(now().Add(transfer.TokenLifetimeMax + transfer.TokenLeeway)):
		return "", fmt.Errorf("%w: token expires too far in the future", transfer.ErrUnauthorized)
	case claims.Site != site:
		return "", fmt.Errorf("%w: token site is not the access key's", transfer.ErrUnauthorized)
	case claims.Replicable != replicable || claims.ID != id:
		return "", fmt.Errorf("%w: token is for another record", transfer.ErrUnauthorized)
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
