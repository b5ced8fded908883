// Package pglock runs singleton work under a PostgreSQL session advisory
// lock, so that of several processes sharing one database exactly one does
// the work at a time, and another takes over when the holder dies.
package pglock

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jmoiron/sqlx"
)

// Key derives a stable advisory lock key from a name.
func Key(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("geo:" + name))
	return int64(h.Sum64())
}

// Run keeps fn running under the advisory lock named name on db until ctx
// ends. It waits until it holds the lock (retrying every poll), then calls
// fn with a context that is cancelled when the lock is lost (its connection
// broke) or ctx ends. When fn returns, Run releases the lock and, unless ctx
// has ended, waits poll and competes for the lock again; fn's error goes to
// onErr (which may be nil). Run returns when ctx ends.
func Run(ctx context.Context, db *sqlx.DB, name string, poll time.Duration, fn func(ctx context.Context) error, onErr func(error)) {
	key := Key(name)
	for {
		conn, held, err := tryLock(ctx, db, key)
		if err == nil && held {
			if err := runHeld(ctx, conn, key, poll, fn); err != nil && onErr != nil && ctx.Err() == nil {
				onErr(err)
			}
			if ctx.Err() != nil {
				return
			}
		} else if conn != nil {
			conn.Close()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(poll):
		}
	}
}

func tryLock(ctx context.Context, db *sqlx.DB, key int64) (*sql.Conn, bool, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, false, err
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil {
		conn.Close()
		return nil, false, err
	}
	return conn, ok, nil
}

func runHeld(ctx context.Context, conn *sql.Conn, key int64, poll time.Duration, fn func(ctx context.Context) error) error {
	defer conn.Close()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Watch the lock's connection: if it breaks, the lock is gone.
	lost := make(chan struct{})
	go func() {
		t := time.NewTicker(poll)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
				pctx, pcancel := context.WithTimeout(wctx, 5*time.Second)
				err := conn.PingContext(pctx)
				pcancel()
				if err != nil && wctx.Err() == nil {
					close(lost)
					cancel()
					return
				}
			}
		}
	}()
	err := fn(wctx)
	cancel()
	select {
	case <-lost:
		if err == nil || ctx.Err() == nil {
			return fmt.Errorf("pglock: lost advisory lock: connection broke")
		}
	default:
		uctx, ucancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = conn.ExecContext(uctx, `SELECT pg_advisory_unlock($1)`, key)
		ucancel()
	}
	return err
}
