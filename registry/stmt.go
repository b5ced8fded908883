package registry

import (
	"context"
	"errors"
	"sync"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// stmtCache holds the prepared statements of the hot paths (claims, lease
// renewals, settles, checksum lookups), prepared on first use. Each such
// statement is planned once per connection instead of on every call: the
// claim and settle statements cost more to plan than to run (measured in
// docs/performance.md), and every small blob's sync runs several of them.
// database/sql prepares a statement again on each pooled connection it
// runs on, and after a reconnect; PostgreSQL re-plans it after DDL.
type stmtCache struct {
	db *sqlx.DB
	mu sync.Mutex
	m  map[string]*sqlx.Stmt
}

func newStmtCache(db *sqlx.DB) *stmtCache {
	return &stmtCache{db: db, m: map[string]*sqlx.Stmt{}}
}

// get returns query prepared, preparing it if it is not yet. A failed
// preparation is not cached: the next call tries again.
func (c *stmtCache) get(ctx context.Context, query string) (*sqlx.Stmt, error) {
	c.mu.Lock()
	st := c.m[query]
	c.mu.Unlock()
	if st != nil {
		return st, nil
	}
	st, err := c.db.PreparexContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[query]; old != nil {
		_ = st.Close()
		return old, nil
	}
	c.m[query] = st
	return st, nil
}

// check returns err, first dropping query's prepared statement when err
// says the preparation itself went bad: "cached plan must not change
// result type" after a schema change (0A000), or a statement the server
// no longer knows (26000, e.g. behind a pooler). The next use prepares it
// again, so such an error costs one failed call, not every call until a
// restart.
func (c *stmtCache) check(query string, err error) error {
	var pe *pq.Error
	if err == nil || !errors.As(err, &pe) || (pe.Code != "0A000" && pe.Code != "26000") {
		return err
	}
	c.mu.Lock()
	st := c.m[query]
	delete(c.m, query)
	c.mu.Unlock()
	if st != nil {
		_ = st.Close()
	}
	return err
}

// prepared returns query prepared on the store's handle, or, when tx is
// not nil, the same statement bound to tx (reusing its preparation on
// tx's connection when there is one).
func (b *base) prepared(ctx context.Context, tx *sqlx.Tx, query string) (*sqlx.Stmt, error) {
	st, err := b.stmts.get(ctx, query)
	if err != nil {
		return nil, err
	}
	if tx != nil {
		return tx.StmtxContext(ctx, st), nil
	}
	return st, nil
}
