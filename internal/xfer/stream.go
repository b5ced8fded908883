package xfer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"time"

	"golang.org/x/time/rate"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/replicator/transfer"
)

// Stream is one record's bytes as the primary's transfer endpoint serves
// them, read as they arrive instead of stored: a secondary's read-through.
// The bytes are checked as Fetch checks them: the size against
// Content-Length and HeaderSize, the SHA-256 against the checksum known
// before the transfer (the caller's, else the primary's announcement).
//
// A mismatch can only show once every byte has arrived, so Read never
// hands out a complete-looking body that is wrong: the Read that would
// return the last bytes checks the checksum first and, on a mismatch,
// returns no bytes and an error matching blob.ErrChecksumMismatch instead
// of the bytes and then io.EOF. A body shorter or longer than announced
// gives transfer.ErrSizeMismatch the same way, a stall transfer.ErrTimeout.
// After an error every Read returns it again. A Stream is not safe for
// concurrent use; Close must be called.
type Stream struct {
	// Size is the blob's size in bytes, as the primary announced it.
	Size int64
	// Checksum is the lowercase hex SHA-256 the bytes are checked against.
	Checksum string
	// Key is the storage key the primary served the bytes from
	// (HeaderKey), "" when it sent none.
	Key string
	// ModTime is the primary's Last-Modified, zero when it sent none.
	ModTime time.Time

	x       *exchange
	limiter *rate.Limiter
	hash    hash.Hash
	n       int64
	err     error // sticky: io.EOF once complete and checked
	closed  bool
}

// Stream asks the primary for record id of replicable and returns the
// answer's body to read (see Stream for the checks). wantChecksum, when
// not "", is the checksum the caller expects (as for Fetch); "" takes the
// primary's announcement, and an answer announcing neither a checksum nor
// a size is refused, since its bytes could not be checked. It fails with
// the errors of Fetch (transfer.ErrRecordNotFound, ErrMissingOnPrimary,
// ErrUnauthorized, ...), wrapped. Unlike Fetch it accepts bytes served from
// any key: the caller reads the primary's current version of the record,
// whichever key holds it (Stream.Key says which). ctx governs the whole
// stream, the reads included.
func (d *Downloader) Stream(ctx context.Context, replicable string, id int64, wantChecksum string) (*Stream, error) {
	fail := func(err error) (*Stream, error) {
		return nil, fmt.Errorf("transfer: stream %s/%d: %w", replicable, id, err)
	}
	x, err := d.send(ctx, replicable, id, wantChecksum)
	if err != nil {
		return fail(err)
	}
	if x.announced < 0 {
		x.close()
		return fail(fmt.Errorf("%w: the primary announced no size (Content-Length, %s)", transfer.ErrSizeMismatch, HeaderSize))
	}
	if x.expect() == "" {
		x.close()
		return fail(fmt.Errorf("%w: the primary announced no checksum (%s) and none was expected", blob.ErrChecksumMismatch, HeaderChecksum))
	}
	s := &Stream{Size: x.announced, Checksum: x.expect(), Key: x.resp.Header.Get(HeaderKey), x: x, limiter: d.limiter, hash: sha256.New()}
	if lm := x.resp.Header.Get("Last-Modified"); lm != "" {
		if t, err := http.ParseTime(lm); err == nil {
			s.ModTime = t
		}
	}
	return s, nil
}

// Read implements io.Reader (see Stream).
func (s *Stream) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.closed {
		return 0, errors.New("transfer: read of a closed stream")
	}
	left := s.Size - s.n
	if left == 0 {
		// Only an empty blob gets here unchecked.
		return 0, s.finish()
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > left+1 {
		p = p[:left+1] // one byte more shows a body longer than announced
	}
	s.x.stall.Reset(s.x.timeout)
	m, err := s.x.resp.Body.Read(p)
	s.x.stall.Stop()
	if m > 0 && s.limiter != nil {
		if werr := s.limiter.WaitN(s.x.ctx, m); werr != nil {
			return 0, s.fail(werr)
		}
	}
	if int64(m) > left {
		return 0, s.fail(fmt.Errorf("%w: the body is longer than the %d bytes announced", transfer.ErrSizeMismatch, s.Size))
	}
	s.hash.Write(p[:m])
	s.n += int64(m)
	if s.n == s.Size {
		// The last bytes: check them all before handing these out.
		if err := s.finish(); err != io.EOF {
			return 0, err
		}
		return m, nil
	}
	switch {
	case err == io.EOF:
		return 0, s.fail(fmt.Errorf("%w: received %d bytes, announced %d", transfer.ErrSizeMismatch, s.n, s.Size))
	case err != nil:
		return 0, s.fail(s.x.transportErr(err))
	}
	return m, nil
}

// finish checks the complete bytes' checksum: io.EOF when they match
// (what every later Read returns), else the mismatch.
func (s *Stream) finish() error {
	if sum := hex.EncodeToString(s.hash.Sum(nil)); sum != s.Checksum {
		return s.fail(fmt.Errorf("%w: received %s, want %s", blob.ErrChecksumMismatch, sum, s.Checksum))
	}
	s.err = io.EOF
	return io.EOF
}

func (s *Stream) fail(err error) error {
	s.err = fmt.Errorf("transfer: stream: %w", err)
	return s.err
}

// Err returns the error the stream ended with, nil while it goes on or
// once its bytes arrived complete and checked.
func (s *Stream) Err() error {
	if s.err == io.EOF {
		return nil
	}
	return s.err
}

// Received reports how many bytes of the body have arrived so far.
func (s *Stream) Received() int64 { return s.n }

// Close ends the transfer (at once, if the body was not read to its end)
// and releases its connection. It is safe to call more than once.
func (s *Stream) Close() error {
	if !s.closed {
		s.closed = true
		s.x.close()
	}
	return nil
}
