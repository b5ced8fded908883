package regstore

import (
	"context"
	"fmt"
	"sort"
)

// RemoveUnreferenced removes, with remove, the bytes at each of keys (in
// the key space of type typ) that no registry row of this tracking
// database records or stages in that space (R7), in one
// transaction holding the keys' locks from the check to the removal, so a
// sync that starts naming one of them either sees it removed first or
// keeps it. It is for bytes no row ever named here (a rejoined site's
// records only its old database had). It returns the keys removed and the
// keys kept because a row names them; on an error nothing is reported
// removed, though bytes removed before it are gone.
func (s *Store) RemoveUnreferenced(ctx context.Context, typ string, keys []string, remove func(ctx context.Context, key string) error) (removed, kept []string, err error) {
	if len(keys) == 0 {
		return nil, nil, nil
	}
	keys = append([]string(nil), keys...)
	sort.Strings(keys)
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("registry: remove unreferenced: %w", err)
	}
	defer tx.Rollback()
	rels := make([]release, len(keys))
	for i, k := range keys {
		rels[i] = release{key: k, typ: typ} // no row releases it
	}
	free, err := s.unreferenced(ctx, tx, rels)
	if err != nil {
		return nil, nil, fmt.Errorf("registry: remove unreferenced: %w", err)
	}
	for i, k := range keys {
		if i > 0 && keys[i-1] == k {
			continue
		}
		if !free.has(typ, k) {
			kept = append(kept, k)
			continue
		}
		if err := remove(ctx, k); err != nil {
			return nil, nil, fmt.Errorf("registry: remove unreferenced %q: %w", k, err)
		}
		removed = append(removed, k)
	}
	if err := tx.Commit(); err != nil {
		return nil, nil, fmt.Errorf("registry: remove unreferenced: %w", err)
	}
	return removed, kept, nil
}
