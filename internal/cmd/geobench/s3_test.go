package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestStorageFlag: -storage takes dir or s3, and s3 only for the scenarios
// that measure object storage; anything else is a usage error (exit 2)
// before any set-up.
func TestStorageFlag(t *testing.T) {
	for _, args := range [][]string{
		{"sync-small", "-storage", "gcs"},
		{"backfill", "-storage", "s3"},
		{"orphans", "-storage", "s3"},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("geobench %s: exit %d, want 2 (stderr %q)", strings.Join(args, " "), code, errOut.String())
		}
		if !strings.Contains(errOut.String(), "-storage") {
			t.Errorf("geobench %s: stderr %q does not name -storage", strings.Join(args, " "), errOut.String())
		}
	}
}
