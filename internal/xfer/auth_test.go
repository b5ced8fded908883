package xfer_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/transfer"
)

// sign makes a token with arbitrary claims and method, for forging.
func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func claims(replicable string, id int64, site string, iat, exp time.Time) jwt.MapClaims {
	c := jwt.MapClaims{"replicable": replicable, "id": id, "site": site}
	if !iat.IsZero() {
		c["iat"] = iat.Unix()
	}
	if !exp.IsZero() {
		c["exp"] = exp.Unix()
	}
	return c
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestAuthRejectsBadTokens(t *testing.T) {
	p := newPrimary(t)
	p.add(7, []byte("secret record bytes"))
	now := time.Now()
	c := p.creds
	secret := c.Secret
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	good := sign(t, jwt.SigningMethodHS256, secret, claims(testReplicable, 7, c.Site, now, now.Add(time.Minute)))
	parts := strings.Split(good, ".")
	otherPayload := strings.Split(sign(t, jwt.SigningMethodHS256, secret, claims(testReplicable, 8, c.Site, now, now.Add(time.Minute))), ".")[1]

	for _, tc := range []struct{ name, header string }{
		{"NoHeader", ""},
		{"OtherScheme", "Bearer " + good},
		{"NoAccessKey", "Geo " + good},
		{"Expired", "Geo AK1:" + sign(t, jwt.SigningMethodHS256, secret, claims(testReplicable, 7, c.Site, now.Add(-5*time.Minute), now.Add(-4*time.Minute)))},
		{"IssuedInTheFuture", "Geo AK1:" + sign(t, jwt.SigningMethodHS256, secret, claims(testReplicable, 7, c.Site, now.Add(5*time.Minute), now.Add(5*time.Minute+30*time.Second)))},
		{"ExpiresTooFarAhead", "Geo AK1:" + sign(t, jwt.SigningMethodHS256, secret, claims(testReplicable, 7, c.Site, now, now.Add(time.Hour)))},
		{"NoExp", "Geo AK1:" + sign(t, jwt.SigningMethodHS256, secret, claims(testReplicable, 7, c.Site, now, time.Time{}))},
		{"NoIat", "Geo AK1:" + sign(t, jwt.SigningMethodHS256, secret, claims(testReplicable, 7, c.Site, time.Time{}, now.Add(time.Minute)))},
		{"AlgNone", "Geo AK1:" + b64(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + "."},
		{"AlgNoneSigned", "Geo AK1:" + sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(testReplicable, 7, c.Site, now, now.Add(time.Minute)))},
		{"AlgRS256", "Geo AK1:" + sign(t, jwt.SigningMethodRS256, rsaKey, claims(testReplicable, 7, c.Site, now, now.Add(time.Minute)))},
		{"AlgHS512", "Geo AK1:" + sign(t, jwt.SigningMethodHS512, secret, claims(testReplicable, 7, c.Site, now, now.Add(time.Minute)))},
		{"TamperedPayload", "Geo AK1:" + parts[0] + "." + otherPayload + "." + parts[2]},
		{"TamperedSignature", "Geo AK1:" + parts[0] + "." + parts[1] + "." + b64("not the signature")},
		{"OtherID", "Geo AK1:" + sign(t, jwt.SigningMethodHS256, secret, claims(testReplicable, 8, c.Site, now, now.Add(time.Minute)))},
		{"OtherReplicable", "Geo AK1:" + sign(t, jwt.SigningMethodHS256, secret, claims("upload", 7, c.Site, now, now.Add(time.Minute)))},
		{"OtherSite", "Geo AK1:" + sign(t, jwt.SigningMethodHS256, secret, claims(testReplicable, 7, "secondary-2", now, now.Add(time.Minute)))},
		{"UnknownAccessKey", "Geo AK2:" + good},
		{"WrongSecret", "Geo AK1:" + sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("w", 32)), claims(testReplicable, 7, c.Site, now, now.Add(time.Minute)))},
		{"Garbage", "Geo AK1:a.b.c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := p.logs.Len()
			resp, body := p.get(t, "GET", xfer.TransferPath(testReplicable, 7), tc.header)
			e := decodeError(t, body)
			if resp.StatusCode != http.StatusUnauthorized || e.Code != xfer.CodeUnauthorized || e.Message != "unauthorized" {
				t.Errorf("GET = %d %+v, want 401 unauthorized (saying no more)", resp.StatusCode, e)
			}
			if strings.Contains(string(body), "secret record") {
				t.Errorf("the blob leaked into a 401 answer")
			}
			token := tc.header[strings.LastIndex(tc.header, ":")+1:]
			assertNoLeak(t, "response", string(body), secret, token)

			_, err := xfer.Verifier{Secrets: transfer.NewStaticSecrets(c)}.Verify(t.Context(), tc.header, testReplicable, 7)
			if !errors.Is(err, transfer.ErrUnauthorized) {
				t.Errorf("Verify = %v, want ErrUnauthorized", err)
			} else {
				assertNoLeak(t, "Verify error", err.Error(), secret, token)
			}
			logs := p.logs.All()[before:]
			if len(logs) == 0 {
				t.Errorf("no log entry for a rejected request")
			}
			for _, l := range logs {
				assertNoLeak(t, "log", fmt.Sprintf("%s %v", l.Message, l.ContextMap()), secret, token)
			}
		})
	}

	// The genuine token is accepted, once for its record only.
	resp, _ := p.get(t, "GET", xfer.TransferPath(testReplicable, 7), "Geo AK1:"+good)
	if resp.StatusCode != 200 {
		t.Errorf("GET with a genuine token = %d, want 200", resp.StatusCode)
	}
}

func TestDownloadWithWrongSecretIsUnauthorized(t *testing.T) {
	p := newPrimary(t)
	p.add(1, []byte("x"))
	sec := newDir(t)
	wrong := newCreds(p.creds.Site, p.creds.AccessKey)
	d := p.downloader(t, func(c *xfer.DownloaderConfig) { c.Credentials = wrong })
	_, err := d.Fetch(t.Context(), testReplicable, 1, sec, "k", "")
	if !errors.Is(err, transfer.ErrUnauthorized) {
		t.Fatalf("Fetch with a wrong secret = %v, want ErrUnauthorized", err)
	}
	assertNoLeak(t, "Fetch error", err.Error(), wrong.Secret)
	assertNoLeak(t, "Fetch error", err.Error(), p.creds.Secret)
	wantNothingAt(t, sec, "k")
}

func TestVerifierClockSkew(t *testing.T) {
	c := newCreds("site", "AK")
	v := xfer.Verifier{Secrets: transfer.NewStaticSecrets(c)}
	for _, tc := range []struct {
		name string
		skew time.Duration // signer's clock minus verifier's
		ok   bool
	}{{"InSync", 0, true}, {"SignerAheadWithinLeeway", 5 * time.Second, true}, {"SignerBehindWithinLeeway", -30 * time.Second, true},
		{"SignerFarAhead", 2 * time.Minute, false}, {"SignerFarBehind", -2 * time.Minute, false}} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := xfer.Authorization(c, testReplicable, 1, time.Now().Add(tc.skew))
			if err != nil {
				t.Fatal(err)
			}
			site, err := v.Verify(t.Context(), h, testReplicable, 1)
			if (err == nil) != tc.ok || (tc.ok && site != "site") {
				t.Errorf("Verify = %q, %v, want ok=%v", site, err, tc.ok)
			}
		})
	}
}

func TestCredentialsNeverPrintTheSecret(t *testing.T) {
	c := newCreds("site", "AK")
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c)} {
		assertNoLeak(t, "formatted Credentials", s, c.Secret)
	}
}

// FuzzParseToken feeds arbitrary Authorization headers to the verifier: it
// must never panic and never accept one, since the fuzzer cannot forge an
// HMAC. Seeds include genuine tokens for other records.
func FuzzParseToken(f *testing.F) {
	c := transfer.Credentials{Site: "site", AccessKey: "AK", Secret: []byte(strings.Repeat("s", 32))}
	v := xfer.Verifier{Secrets: transfer.NewStaticSecrets(c)}
	now := time.Now()
	other, _ := xfer.Authorization(c, testReplicable, 2, now)
	otherType, _ := xfer.Authorization(c, "upload", 1, now)
	f.Add(other)
	f.Add(otherType)
	f.Add("")
	f.Add("Geo ")
	f.Add("Geo :")
	f.Add("Geo AK:")
	f.Add("Geo AK:..")
	f.Add("Geo AK:" + b64(`{"alg":"none"}`) + "." + b64(`{"replicable":"package_file","id":1,"site":"site","iat":1,"exp":99999999999}`) + ".")
	f.Add("geo AK:a.b.c")
	f.Add("Geo AK:" + strings.Repeat("A", 5000))
	f.Fuzz(func(t *testing.T, header string) {
		accessKey, token, err := xfer.ParseAuthorization(header)
		if err == nil && (accessKey == "" || token == "") {
			t.Fatalf("ParseAuthorization(%q) accepted an empty part", header)
		}
		if site, err := v.Verify(t.Context(), header, testReplicable, 1); err == nil {
			t.Fatalf("Verify accepted %q (site %q)", header, site)
		} else if !errors.Is(err, transfer.ErrUnauthorized) {
			t.Fatalf("Verify(%q) = %v, want ErrUnauthorized", header, err)
		}
	})
}

// TestCredentialsPrintNoSecret prints Credentials, and configurations
// holding them, every way a program prints a configuration: fmt verbs,
// json.Marshal, slog's text and JSON handlers, zap.Any and zap.Reflect
// with zap's JSON and console encoders. The secret's bytes must appear in
// no encoding (raw, base64, hex, fmt's byte list); the site must, so the
// output still says which credentials they are.
func TestCredentialsPrintNoSecret(t *testing.T) {
	c := newCreds("printed-site", "AKPRINT")
	type holder struct {
		Name  string
		Creds transfer.Credentials
		Ptr   *transfer.Credentials
		List  []transfer.Credentials
	}
	type embedding struct {
		transfer.Credentials
		Port int
	}
	configs := map[string]any{
		"Credentials":                 c,
		"*Credentials":                &c,
		"holder":                      holder{Name: "cfg", Creds: c, Ptr: &c, List: []transfer.Credentials{c}},
		"embedding":                   embedding{Credentials: c, Port: 1},
		"StaticSecrets":               transfer.NewStaticSecrets(c),
		"xfer.DownloaderConfig":       xfer.DownloaderConfig{BaseURL: "http://127.0.0.1:1", Credentials: c},
		"replicator.SecondaryConfig":  replicator.SecondaryConfig{PrimaryURL: "http://127.0.0.1:1", Credentials: c},
		"*replicator.SecondaryConfig": &replicator.SecondaryConfig{PrimaryURL: "http://127.0.0.1:1", Credentials: c},
	}
	printers := map[string]func(v any) string{
		"fmt.Sprint":   func(v any) string { return fmt.Sprint(v) },
		"fmt.Sprintln": func(v any) string { return fmt.Sprintln(v) },
		"fmt %v %+v %#v": func(v any) string {
			return fmt.Sprintf("%v|%+v|%#v", v, v, v)
		},
		"fmt %s %q %x %X": func(v any) string { return fmt.Sprintf("%s|%q|%x|%X", v, v, v, v) },
		"fmt %d %o %b %c %U": func(v any) string {
			return fmt.Sprintf("%d|%o|%b|%c|%U", v, v, v, v, v)
		},
		"fmt.Errorf %v": func(v any) string { return fmt.Errorf("config %v: %w", v, errors.ErrUnsupported).Error() },
		"json.Marshal": func(v any) string {
			b, err := json.Marshal(v)
			return string(b) + fmt.Sprint(err)
		},
		"json.MarshalIndent": func(v any) string {
			b, err := json.MarshalIndent(v, "", "  ")
			return string(b) + fmt.Sprint(err)
		},
		"slog text": func(v any) string {
			var b bytes.Buffer
			slog.New(slog.NewTextHandler(&b, nil)).Info("config", "cfg", v)
			return b.String()
		},
		"slog JSON": func(v any) string {
			var b bytes.Buffer
			slog.New(slog.NewJSONHandler(&b, nil)).Info("config", "cfg", v)
			return b.String()
		},
		"slog JSON group": func(v any) string {
			var b bytes.Buffer
			slog.New(slog.NewJSONHandler(&b, nil)).With(slog.Group("start", slog.Any("cfg", v))).Info("config")
			return b.String()
		},
		"slog text message": func(v any) string {
			var b bytes.Buffer
			slog.New(slog.NewTextHandler(&b, nil)).Info(fmt.Sprintf("config %+v", v))
			return b.String()
		},
	}
	for _, enc := range []struct {
		name string
		new  func() zapcore.Encoder
	}{
		{"JSON", func() zapcore.Encoder { return zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()) }},
		{"console", func() zapcore.Encoder { return zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()) }},
	} {
		for name, field := range map[string]func(v any) zap.Field{
			"zap.Any":     func(v any) zap.Field { return zap.Any("cfg", v) },
			"zap.Reflect": func(v any) zap.Field { return zap.Reflect("cfg", v) },
		} {
			printers[name+" "+enc.name] = func(v any) string {
				var b bytes.Buffer
				zap.New(zapcore.NewCore(enc.new(), zapcore.AddSync(&b), zap.DebugLevel)).Info("config", field(v))
				return b.String()
			}
		}
	}
	for cname, cfg := range configs {
		for pname, print := range printers {
			out := print(cfg)
			where := pname + " of " + cname
			assertNoLeak(t, where, out, c.Secret)
			if !strings.Contains(out, "printed-site") && !strings.Contains(out, "unsupported type") {
				t.Errorf("%s = %q, want the site named (or a marshalling error)", where, out)
			}
		}
	}
}
