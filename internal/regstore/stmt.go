package regstore

import (
	"context"

	"github.com/jmoiron/sqlx"
)

// prepared returns query prepared on the store's handle (base.stmts, the
// internal/stmtcache.Cache of the hot paths: claims, lease renewals,
// settles, checksum lookups), or, when tx is not nil, the same statement
// bound to tx.
func (b *base) prepared(ctx context.Context, tx *sqlx.Tx, query string) (*sqlx.Stmt, error) {
	return b.stmts.Prepared(ctx, tx, query)
}
