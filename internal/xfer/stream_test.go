package xfer_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

func TestStreamRoundTrip(t *testing.T) {
	p := newPrimary(t)
	d := p.downloader(t, nil)
	for _, size := range []int{0, 1, 5000, 3 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			data := randBytes(size)
			id := int64(size + 1)
			sum := p.add(id, data)
			s, err := d.Stream(t.Context(), testReplicable, id, "")
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.Size != int64(size) || s.Checksum != sum || s.Key != "" {
				t.Errorf("stream = size %d checksum %s key %q, want %d %s and no key", s.Size, s.Checksum, s.Key, size, sum)
			}
			got, err := io.ReadAll(s)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("ReadAll = %d bytes, %v; want the record's %d bytes", len(got), err, size)
			}
			if n, err := s.Read(make([]byte, 10)); n != 0 || err != io.EOF {
				t.Errorf("Read after the end = %d, %v; want 0, io.EOF", n, err)
			}
		})
	}
}

// TestStreamMismatchNeverLooksComplete: a body corrupted in transit ends
// in ErrChecksumMismatch instead of io.EOF, and the bytes handed out stop
// short of the announced size, so even a reader that stops after Size
// bytes (io.CopyN, http.ServeContent) cannot take it for the blob.
func TestStreamMismatchNeverLooksComplete(t *testing.T) {
	p := newPrimary(t)
	d := p.downloader(t, nil)
	for _, tc := range []struct {
		name string
		size int
		at   int64
	}{{"small", 1000, 10}, {"large", 3 << 20, 2 << 20}, {"last byte", 3 << 20, 3<<20 - 1}} {
		t.Run(tc.name, func(t *testing.T) {
			p.add(1, randBytes(tc.size))
			p.wrap = func(s xfer.Source) xfer.Source {
				s.Body = &flipReader{ReadSeekCloser: s.Body, at: tc.at}
				return s
			}
			t.Cleanup(func() { p.wrap = nil })
			s, err := d.Stream(t.Context(), testReplicable, 1, "")
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got, err := io.ReadAll(s)
			if !errors.Is(err, blob.ErrChecksumMismatch) {
				t.Fatalf("ReadAll of a corrupted body = %d bytes, %v; want ErrChecksumMismatch", len(got), err)
			}
			if len(got) >= tc.size {
				t.Errorf("%d bytes handed out of a corrupted %d-byte body: it looks complete", len(got), tc.size)
			}
			if _, err := s.Read(make([]byte, 1)); !errors.Is(err, blob.ErrChecksumMismatch) {
				t.Errorf("Read after the mismatch = %v, want the mismatch again", err)
			}
		})
	}
	// The caller's expected checksum is checked too.
	data := randBytes(2000)
	p.addRecord(2, data, "")
	// The primary announces nothing: the mismatch shows at the end.
	s, err := d.Stream(t.Context(), testReplicable, 2, sha([]byte("other")))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := io.ReadAll(s); !errors.Is(err, blob.ErrChecksumMismatch) {
		t.Errorf("ReadAll with a wrong expected checksum = %v, want ErrChecksumMismatch", err)
	}
}

func TestStreamSizeMismatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{"truncated", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(xfer.HeaderChecksum, sha(make([]byte, 100_000)))
			w.Header().Set("Content-Length", "100000")
			w.Write(make([]byte, 50_000))
		}},
		{"longer", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(xfer.HeaderChecksum, sha(make([]byte, 10)))
			w.Header().Set(xfer.HeaderSize, "10")
			w.(http.Flusher).Flush() // chunked: no Content-Length
			w.Write(make([]byte, 20))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := rawPrimary(t, tc.h)
			s, err := d.Stream(t.Context(), testReplicable, 1, "")
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := io.ReadAll(s); !errors.Is(err, transfer.ErrSizeMismatch) {
				t.Errorf("ReadAll = %v, want ErrSizeMismatch", err)
			}
		})
	}
	d, _ := rawPrimary(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 5)) // neither size nor checksum
		w.(http.Flusher).Flush()
	})
	if _, err := d.Stream(t.Context(), testReplicable, 1, ""); !errors.Is(err, transfer.ErrSizeMismatch) {
		t.Errorf("Stream of a body of unknown size = %v, want ErrSizeMismatch", err)
	}
}

func TestStreamNotFoundKinds(t *testing.T) {
	p := newPrimary(t)
	p.addRecord(1, nil, "") // record without bytes
	d := p.downloader(t, nil)
	if _, err := d.Stream(t.Context(), testReplicable, 1, ""); !errors.Is(err, transfer.ErrMissingOnPrimary) {
		t.Errorf("Stream of a record without bytes = %v, want ErrMissingOnPrimary", err)
	}
	_, err := d.Stream(t.Context(), testReplicable, 2, "")
	if !errors.Is(err, strategy.ErrNotFound) || errors.Is(err, transfer.ErrMissingOnPrimary) {
		t.Errorf("Stream of no record = %v, want strategy.ErrNotFound only", err)
	}
}

// TestStreamTakesAnyKey: a read-through wants the primary's current
// version, whichever key serves it, and says which.
func TestStreamTakesAnyKey(t *testing.T) {
	d, _ := rawPrimary(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(xfer.HeaderKey, "a/new/key")
		w.Header().Set(xfer.HeaderChecksum, sha([]byte("bytes")))
		w.Header().Set("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT")
		w.Write([]byte("bytes"))
	})
	s, err := d.Stream(t.Context(), testReplicable, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := io.ReadAll(s); err != nil || string(got) != "bytes" || s.Key != "a/new/key" || s.ModTime.IsZero() {
		t.Errorf("stream = %q, %v, key %q, modtime %v", got, err, s.Key, s.ModTime)
	}
}
