// Package stmtcache keeps the prepared statements of a database handle's
// hot paths, prepared on first use, for geo's registry and its test type.
package stmtcache

import (
	"context"
	"errors"
	"sync"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Cache holds prepared statements of one handle, prepared on first use.
// Each such statement is planned once per connection instead of on every
// call (the registry's claim and settle statements cost more to plan than
// to run, and the endpoint's key lookup runs once per blob; measured in
// docs/performance.md). database/sql prepares a statement again on each
// pooled connection it runs on, and after a reconnect; PostgreSQL
// re-plans it after DDL. A Cache is safe for concurrent use.
type Cache struct {
	db *sqlx.DB
	mu sync.Mutex
	m  map[string]*sqlx.Stmt
}

// New returns an empty Cache over db.
func New(db *sqlx.DB) *Cache {
	return &Cache{db: db, m: map[string]*sqlx.Stmt{}}
}

// Get returns query prepared, preparing it if it is not yet. A failed
// preparation is not cached: the next call tries again.
func (c *Cache) Get(ctx context.Context, query string) (*sqlx.Stmt, error) {
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

// Check returns err, first dropping query's prepared statement when err
// says the preparation itself went bad: "cached plan must not change
// result type" after a schema change (0A000), or a statement the server
// no longer knows (26000, e.g. behind a pooler). The next use prepares it
// again, so such an error costs one failed call, not every call until a
// restart.
func (c *Cache) Check(query string, err error) error {
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

// Prepared returns query prepared on the cache's handle, or, when tx is
// not nil, the same statement bound to tx (reusing its preparation on
// tx's connection when there is one).
func (c *Cache) Prepared(ctx context.Context, tx *sqlx.Tx, query string) (*sqlx.Stmt, error) {
	st, err := c.Get(ctx, query)
	if err != nil {
		return nil, err
	}
	if tx != nil {
		return tx.StmtxContext(ctx, st), nil
	}
	return st, nil
}
