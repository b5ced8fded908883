package blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

// copyBufSize is the buffer size for hashing and copying. DESIGN §11: a
// 32 KiB buffer is 20–35% slower than 1 MiB on a durable verified stream.
const copyBufSize = 1 << 20

// SHA256Reader reads r to EOF and returns the lowercase hex SHA-256 of what
// it read and the number of bytes. It stops with ctx's error (wrapped) when
// ctx is done; it checks ctx between reads of at most 1 MiB. When r tells
// its size (a Reader, an *os.File) the buffer is no larger than the data,
// so hashing many small blobs does not allocate 1 MiB each.
func SHA256Reader(ctx context.Context, r io.Reader) (sum string, n int64, err error) {
	h := sha256.New()
	buf := make([]byte, bufSizeFor(r))
	for {
		if err := ctx.Err(); err != nil {
			return "", n, fmt.Errorf("blob: sha256: %w", err)
		}
		m, rerr := r.Read(buf)
		if m > 0 {
			h.Write(buf[:m])
			n += int64(m)
		}
		if rerr == io.EOF {
			return hex.EncodeToString(h.Sum(nil)), n, nil
		}
		if rerr != nil {
			return "", n, fmt.Errorf("blob: sha256: %w", rerr)
		}
	}
}

// bufSizeFor returns a read buffer size for r: 1 MiB, or less when r says
// it holds less (plus one byte, so the EOF comes in the same read or the next).
func bufSizeFor(r io.Reader) int {
	var size int64 = -1
	switch v := r.(type) {
	case interface{ Size() int64 }:
		size = v.Size()
	case *os.File:
		if fi, err := v.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		}
	}
	if size < 0 || size >= copyBufSize {
		return copyBufSize
	}
	return int(max(size+1, 512))
}

// SHA256File returns the lowercase hex SHA-256 and size of the file at path.
// A missing file gives an error matching os.ErrNotExist (fs.ErrNotExist).
func SHA256File(ctx context.Context, path string) (sum string, n int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("blob: sha256 file: %w", err)
	}
	defer f.Close()
	return SHA256Reader(ctx, f)
}
