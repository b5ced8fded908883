package replicator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/strategy"
)

// ReadSource says where the bytes a BlobReader reads come from.
type ReadSource string

// Read sources.
const (
	// ReadLocal: this secondary's synced copy.
	ReadLocal ReadSource = "local"
	// ReadPrimary: the primary's transfer endpoint, streamed (a
	// read-through).
	ReadPrimary ReadSource = "primary"
)

// ReadOptions says how fresh a read on a secondary must be. The zero
// value (or nil) asks for nothing more than the secondary knows.
type ReadOptions struct {
	// After, when not the zero Position, is a Position Publish returned
	// on the primary (forwarded by a client, say in events.PositionHeader):
	// the bytes read are then at least as new as the record's state
	// there. The local copy qualifies once the event consumer has handled
	// every event up to After and the record's row is synced.
	After events.Position
	// Wait, when the local copy does not qualify, waits (bounded by ctx)
	// for the consumer to pass After and for the record's sync to end,
	// then reads the local copy, instead of reading from the primary at
	// once. If the sync ends without a copy that qualifies (it failed, the
	// record changed again), the read goes to the primary all the same.
	// Without Wait a read that the local copy cannot serve streams from
	// the primary.
	Wait bool
}

// BlobReader reads one record's bytes on a secondary (Secondary.Open). It
// is not safe for concurrent use; Close must be called.
type BlobReader struct {
	// Source says where the bytes come from.
	Source ReadSource
	// Size is the blob's size in bytes.
	Size int64
	// Checksum is the bytes' lowercase hex SHA-256: the one recorded when
	// the local copy was synced (and verified since), or the one a
	// read-through checks the primary's bytes against.
	Checksum string
	// ModTime is when the bytes were written (the local copy's, or the
	// primary's Last-Modified); zero when unknown.
	ModTime time.Time
	// Fresh is a Position the bytes are at least as new as: the record's
	// state after every event up to Fresh. For a local copy it is the
	// event cursor when the copy was chosen (the zero Position before the
	// consumer's first progress); for a read-through, the greater of that
	// cursor and ReadOptions.After (the primary's bytes are its current
	// ones). Send it back to clients in events.PositionHeader.
	Fresh events.Position

	local  *blob.Reader
	remote *xfer.Stream
}

// Read implements io.Reader. A read-through whose bytes do not match
// their size or checksum ends with an error (matching
// blob.ErrChecksumMismatch, or transfer.ErrSizeMismatch) instead of
// io.EOF, and the Read that would have returned the last bytes returns
// none: the bytes read never look complete.
func (r *BlobReader) Read(p []byte) (int, error) {
	if r.local != nil {
		return r.local.Read(p)
	}
	return r.remote.Read(p)
}

// Close releases the local file or ends the transfer.
func (r *BlobReader) Close() error {
	if r.local != nil {
		return r.local.Close()
	}
	return r.remote.Close()
}

// failed returns the error a read-through ended with, nil while it goes
// on or once it ended well.
func (r *BlobReader) failed() error {
	if r.remote == nil {
		return nil
	}
	return r.remote.Err()
}

// Open opens record id of replicable (a blob type) for reading on this
// secondary: its local copy when that is synced, its key is the one the
// primary's replica gives for the record now, and, with opts.After, the
// event consumer has handled every event up to After (so the copy is at
// least as new as the record was there); otherwise a stream of the
// primary's current bytes through its transfer endpoint, with this
// secondary's credentials and the same size and SHA-256 checks as a sync
// (BlobReader.Read ends with blob.ErrChecksumMismatch instead of io.EOF
// on a mismatch). BlobReader.Source says which happened and
// BlobReader.Fresh how fresh the bytes are. Without opts.After a local
// copy is as fresh as the event cursor, which may be behind the primary
// by the event lag. See ReadOptions.Wait to wait for the local copy
// instead.
//
// A read from the primary does not store what it reads: it makes the
// record's sync happen sooner instead (a record with no row gets a
// pending one; a pending row wakes the sync engine), so the next read is
// local. The bytes are downloaded again by the sync, which alone may
// store them under the registry's rules (a claim, the row lock, R1, R2,
// R7).
//
// Errors: a type not registered matches strategy.ErrUnknownReplicable, one
// that is not a blob type ErrUnsupportedKind; a record the primary does
// not have (deleted, or never created) strategy.ErrNotFound (and
// transfer.ErrRecordNotFound when the primary said so); a record whose
// bytes the primary lacks transfer.ErrMissingOnPrimary; an unreachable
// primary the transport's error (transfer.ErrTimeout for a stall). A
// record out of this secondary's scope is read from the primary. Run
// must be running for the cursor to move; Open itself works without it,
// reading from the primary whenever the local copy does not qualify.
func (s *Secondary) Open(ctx context.Context, replicable string, id int64, opts *ReadOptions) (*BlobReader, error) {
	fail := func(err error) (*BlobReader, error) {
		return nil, fmt.Errorf("replicator: open %s/%d: %w", replicable, id, err)
	}
	st, err := s.blobStrategy(replicable)
	if err != nil {
		return fail(err)
	}
	var o ReadOptions
	if opts != nil {
		o = *opts
	}
	waited := false
	for {
		cursor := s.waits.cursorPos()
		fresh := cursor
		if fresh.Less(o.After) {
			fresh = o.After
		}
		if cursor.Less(o.After) {
			// Events up to After are not all handled: the local copy may
			// predate After.
			if !o.Wait {
				return s.openPrimary(ctx, replicable, id, fresh, fail)
			}
			if err := s.waits.wait(ctx, o.After, true); err != nil {
				return fail(fmt.Errorf("wait for the event cursor to pass %v: %w", o.After, err))
			}
			continue
		}
		// The row is read after the cursor: it reflects every event up to
		// the cursor.
		row, rowErr, key, keyErr := s.lookup(ctx, st, replicable, id)
		if rowErr != nil && !errors.Is(rowErr, registry.ErrNotFound) {
			return fail(rowErr)
		}
		if keyErr != nil && !errors.Is(keyErr, strategy.ErrNotFound) {
			return fail(fmt.Errorf("blob key: %w", keyErr))
		}
		hasRow, hasKey := rowErr == nil, keyErr == nil
		if hasRow && hasKey && row.State == registry.StateSynced && row.BlobKey == key {
			rd, err := s.cfg.Storage.Open(ctx, key)
			switch {
			case err == nil:
				return &BlobReader{Source: ReadLocal, Size: rd.Size(), Checksum: row.VerificationChecksum,
					ModTime: rd.ModTime(), Fresh: cursor, local: rd}, nil
			case !errors.Is(err, blob.ErrNotExist):
				return fail(err)
			}
			// The copy went missing: the existence scan makes the row
			// pending again; the primary serves meanwhile.
		}
		unsettled := hasRow && (row.State == registry.StatePending || row.State == registry.StateStarted)
		if o.Wait && !waited && unsettled {
			waited = true
			if _, err := s.waits.waitRecord(ctx, registry.Key{Replicable: replicable, ModelID: id}, true); err != nil {
				return fail(fmt.Errorf("wait for the record's sync: %w", err))
			}
			continue
		}
		s.hurry(ctx, replicable, id, hasRow, hasKey, row.State)
		return s.openPrimary(ctx, replicable, id, fresh, fail)
	}
}

// lookup reads record id's registry row and its key on the primary's
// replica, at the same time.
func (s *Secondary) lookup(ctx context.Context, st strategy.BlobStrategy, replicable string, id int64) (row registry.Row, rowErr error, key string, keyErr error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		key, keyErr = st.BlobKey(ctx, id)
	}()
	row, rowErr = s.store.Get(ctx, replicable, id)
	<-done
	return row, rowErr, key, keyErr
}

// hurry makes the sync of a record read from the primary happen soon,
// through the engine's own paths: a record the replica knows with no row
// gets a pending one (registry InsertMissing, as backfill inserts it: an
// existing row is left alone), and a pending row wakes the sync engine. A
// failed row keeps its backoff. Errors are logged: the read goes on.
func (s *Secondary) hurry(ctx context.Context, replicable string, id int64, hasRow, hasKey bool, state registry.State) {
	switch {
	case !hasRow && hasKey:
		if _, err := s.store.InsertMissing(ctx, replicable, []int64{id}); err != nil {
			s.cfg.Logger.Warn("read from the primary: cannot make the record's row",
				zap.String("replicable", replicable), zap.Int64("model_record_id", id), zap.Error(err))
			return
		}
		s.sync.Wake()
	case hasRow && state == registry.StatePending:
		s.sync.Wake()
	}
}

// openPrimary streams record id from the primary.
func (s *Secondary) openPrimary(ctx context.Context, replicable string, id int64, fresh events.Position,
	fail func(error) (*BlobReader, error)) (*BlobReader, error) {
	st, err := s.dl.Stream(ctx, replicable, id, "")
	if err != nil {
		return fail(err)
	}
	return &BlobReader{Source: ReadPrimary, Size: st.Size, Checksum: st.Checksum, ModTime: st.ModTime,
		Fresh: fresh, remote: st}, nil
}

// blobStrategy returns replicable's strategy if it is a registered blob
// type.
func (s *Secondary) blobStrategy(replicable string) (strategy.BlobStrategy, error) {
	st, ok := s.cfg.Strategies.Lookup(replicable)
	if !ok {
		return nil, fmt.Errorf("%w: %q", strategy.ErrUnknownReplicable, replicable)
	}
	bs, ok := st.(strategy.BlobStrategy)
	if !ok {
		return nil, fmt.Errorf("%w: %q is not a blob type", ErrUnsupportedKind, replicable)
	}
	return bs, nil
}
