package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/geoframework/geo/replicator/ui"
)

// defaultUIListen is geoctl ui's --listen: loopback only, so that the
// page (and with --allow-actions, its actions) is not on the network
// unless an operator says so.
const defaultUIListen = "127.0.0.1:8080"

// uiShutdownGrace is how long geoctl ui lets requests in flight finish
// when it is interrupted.
const uiShutdownGrace = 5 * time.Second

func (a *app) uiCmd() *cobra.Command {
	var (
		listen, primaryURL, title string
		allowActions              bool
		refresh                   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Serve the web status page against the tracking database",
		Long: `ui serves geo's web status page (the page a secondary's application can
mount, package replicator/ui) against the tracking database alone: per type
progress, backfill and pauses, the event lag, the secondary processes with
their heartbeats, the failure reasons with their records and each record's
detail, with /healthz, /readyz and /status.json (the JSON of status -o json).
--primary-database-url (or ` + envPrimaryURL + `) adds the primary's checksum
progress and failures, and measures the event lag there.

The page is read-only unless --allow-actions is given: then anyone who can
reach --listen may resync, reverify, pause and resume (behind the page's CSRF
protection). Keep the default loopback address, or put an authenticating
proxy in front. On a loopback address only requests naming a loopback host
(localhost, 127.0.0.1, [::1]) are served, so that no other site's page can
reach it through DNS rebinding.

It prints the page's URL and serves until interrupted.`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if refresh < 0 || (refresh > 0 && refresh < ui.RefreshIntervalMin) {
				return usagef("--refresh %v: want at least %v", refresh, ui.RefreshIntervalMin)
			}
			tracking, err := a.trackingDB(cmd.Context())
			if err != nil {
				return err
			}
			if primaryURL == "" {
				primaryURL = os.Getenv(envPrimaryURL)
			}
			var primary *sqlx.DB
			if primaryURL != "" {
				shown, err := checkConn(primaryURL)
				if err != nil {
					return usagef("the primary database's connection string (--primary-database-url / %s) is %v", envPrimaryURL, err)
				}
				if primary, err = sqlx.Open("postgres", primaryURL); err != nil {
					return fmt.Errorf("open the primary database %s: %w (check --primary-database-url / %s)", shown, err, envPrimaryURL)
				}
				defer primary.Close()
				primary.SetMaxOpenConns(4)
			}
			// Handlers log from their own goroutines: serialise the writes.
			logger := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
				zapcore.Lock(zapcore.AddSync(a.errOut)), zap.InfoLevel))
			cfg := ui.Config{Tracking: tracking, Primary: primary, ReadOnly: !allowActions, Title: title,
				RefreshInterval: refresh, QueryTimeout: a.timeout, BatchTimeout: a.timeout, Logger: logger}
			if allowActions {
				// The operator allowed actions for whoever reaches the
				// address; the page's CSRF protection still holds.
				cfg.Authorize = func(*http.Request) bool { return true }
			}
			h, err := ui.New(cfg)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen on %s: %w (check --listen)", listen, err)
			}
			var handler http.Handler = h
			if isLoopback(ln.Addr()) {
				handler = loopbackHostsOnly(h)
			}
			srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
			mode := "read-only; --allow-actions to act from it"
			if allowActions {
				mode = "actions allowed to anyone who reaches it"
			}
			fmt.Fprintf(a.out, "geoctl ui: serving %s (%s); Ctrl-C to stop\n", pageURL(ln.Addr()), mode)
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ln) }()
			select {
			case err := <-served:
				return fmt.Errorf("serve: %w", err)
			case <-cmd.Context().Done():
			}
			ctx, cancel := context.WithTimeout(context.Background(), uiShutdownGrace)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("shut down: %w", err)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&listen, "listen", defaultUIListen, "address to serve the page on (host:port; port 0 picks a free one)")
	cmd.Flags().StringVar(&primaryURL, "primary-database-url", "",
		"read-only URL of the primary's database or a standby: its checksums, and the event lag measured there; default $"+envPrimaryURL)
	cmd.Flags().BoolVar(&allowActions, "allow-actions", false, "offer the actions (resync, reverify, pause, resume) to whoever reaches --listen")
	cmd.Flags().StringVar(&title, "title", "", "the site's name in the page's heading (default "+strconv.Quote(ui.TitleDefault)+")")
	cmd.Flags().DurationVar(&refresh, "refresh", 0, "how often the page refreshes itself (default "+ui.RefreshIntervalDefault.String()+")")
	return cmd
}

// pageURL is the page's URL on addr.
func pageURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String() + "/"
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// isLoopback reports whether addr is a loopback address.
func isLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// loopbackHostsOnly refuses (421 Misdirected Request) requests whose Host
// is not a loopback name or address. A page of another site whose name
// resolves to 127.0.0.1 (DNS rebinding) would otherwise be same-origin
// with it, and read the page (and its CSRF token) in an operator's
// browser.
func loopbackHostsOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			host = hh
		}
		host = strings.Trim(host, "[]")
		ip := net.ParseIP(host)
		if !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
			http.Error(w, "geoctl ui serves loopback names only (localhost, 127.0.0.1, [::1]), not "+strconv.Quote(r.Host),
				http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}
