package cloudblob_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/geotest/s3test"
)

// putMany writes keys (each holding its own name) with 8 writers.
func putMany(t *testing.T, bk *blob.Bucket, keys []string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(keys))
	sem := make(chan struct{}, 8)
	for _, k := range keys {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			w, err := bk.Create(t.Context(), k, nil)
			if err == nil {
				_, err = w.Write([]byte(k))
			}
			if err == nil {
				err = w.Commit(t.Context())
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// listAll returns every key of bk.
func listAll(t *testing.T, bk *blob.Bucket) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	for k, err := range bk.Keys(t.Context(), "") {
		if err != nil {
			t.Fatal(err)
		}
		got[k] = true
	}
	return got
}

// TestBatchRemovalUsesDeleteObjects: RemoveBatch on S3 sends one
// DeleteObjects request per DeleteBatchMax keys (a missing key among
// them is no error) and no per-key DELETE or HEAD, removes exactly the
// keys given, on a bucket opened by New (the s3test driver) and on one
// opened by URL with a prefix (keys outside it untouched); a failing
// DeleteObjects fails RemoveBatch and removes nothing.
func TestBatchRemovalUsesDeleteObjects(t *testing.T) {
	b := s3srv.NewBucket(t)
	setCredentials(t, b)
	proxy, err := s3test.NewFaultProxy(b.Endpoint, s3test.FaultProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	for _, c := range []struct {
		name string
		bk   *blob.Bucket
	}{
		{"New", b.OpenAt(t, proxy.URL())},
		{"URL with prefix", openURL(t, b.URLAt(proxy.URL())+"&prefix=pre/")},
	} {
		t.Run(c.name, func(t *testing.T) {
			var keys []string
			for i := range 1200 {
				keys = append(keys, fmt.Sprintf("%s/orphans/%d/%d", c.name[:3], i%7, i))
			}
			putMany(t, c.bk, keys)
			gone := append(append([]string(nil), keys[:1100]...), "never/there")
			before := proxy.Requests()
			if err := c.bk.RemoveBatch(t.Context(), gone); err != nil {
				t.Fatalf("RemoveBatch(%d keys): %v", len(gone), err)
			}
			if err := c.bk.SyncRemoved(t.Context(), gone); err != nil {
				t.Fatalf("SyncRemoved: %v", err)
			}
			after := proxy.Requests()
			for op, want := range map[s3test.Op]int{s3test.OpDeleteObjects: 2, s3test.OpDeleteObject: 0, s3test.OpHeadObject: 0} {
				if got := after[op] - before[op]; got != want {
					t.Errorf("RemoveBatch of %d keys sent %d %s requests, want %d", len(gone), got, op, want)
				}
			}
			left := listAll(t, c.bk)
			for i, k := range keys {
				if left[k] != (i >= 1100) {
					t.Fatalf("after RemoveBatch, key %q listed = %v, want %v", k, left[k], i >= 1100)
				}
			}

			if c.name != "New" {
				return // the SDK chain's retries back off for up to 20 s; s3test's client caps that
			}
			proxy.SetPolicy(s3test.Always(s3test.ServerError, s3test.OnOps(s3test.OpDeleteObjects)))
			defer proxy.SetPolicy(nil)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if err := c.bk.RemoveBatch(ctx, keys[1100:]); err == nil {
				t.Fatal("RemoveBatch with every DeleteObjects answered 503 = nil, want an error")
			}
			if got := len(listAll(t, c.bk)); got != len(keys)-1100 {
				t.Errorf("after a failed RemoveBatch %d keys are listed, want the %d not removed", got, len(keys)-1100)
			}
		})
	}
	// The URL bucket's prefix kept its keys apart from the other's.
	whole := b.OpenAt(t, b.Endpoint)
	n := 0
	for k := range listAll(t, whole) {
		if len(k) > 4 && k[:4] == "pre/" {
			n++
		}
	}
	if n != 100 {
		t.Errorf("%d keys under pre/ in the whole bucket, want the 100 the prefixed bucket kept", n)
	}
}
