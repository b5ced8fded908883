package regstore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

// TestMissingCopyIsNotAMismatch pins what docs/architecture.md and
// docs/operations.md say of a local copy found missing (issue 20 item
// 13: they said it "records both checksums … sets checksum_mismatch").
// The verification engine settles it as replicator/verify.go does (a
// reason, the primary's checksum, Resync, no Mismatch): the reason is
// recorded, checksum_mismatch stays false, no mismatched checksum is
// recorded, the last local checksum is kept, and the sync state fails so
// the bytes are downloaded again. A mismatch, for contrast, records both
// checksums and sets checksum_mismatch.
func TestMissingCopyIsNotAMismatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newStore(t, regstore.Options{})
	syncedRows(t, s, "a", 1, 2)
	vcs, err := s.ClaimVerification(ctx, regstore.VerifyClaimParams{Lease: regstore.Lease{Owner: "verifier", Duration: time.Minute}, Replicable: "a", Limit: 10, ReverifyInterval: time.Hour})
	if err != nil || len(vcs) != 2 {
		t.Fatalf("ClaimVerification = %d claims, %v; want 2", len(vcs), err)
	}
	local, primary := strings.Repeat("1", 64), strings.Repeat("2", 64)
	for _, vc := range vcs {
		f := regstore.VerifyFailure{Reason: "missing on the secondary: replicator: missing on secondary: k", PrimaryChecksum: primary, Resync: true}
		if vc.ModelID == 2 {
			f = regstore.VerifyFailure{Reason: "checksum mismatch: local " + local + ", primary " + primary,
				LocalChecksum: local, PrimaryChecksum: primary, Mismatch: true, Resync: true}
		}
		if ok, err := s.SettleVerifyFailed(ctx, "verifier", vc, f); !ok || err != nil {
			t.Fatalf("SettleVerifyFailed(%d) = %v, %v", vc.ModelID, ok, err)
		}
	}

	missing := mustGet(t, s, "a", 1)
	switch {
	case missing.ChecksumMismatch:
		t.Errorf("missing copy: checksum_mismatch set, want false (a missing copy is not a mismatch)")
	case missing.VerificationChecksumMismatched != "":
		t.Errorf("missing copy: verification_checksum_mismatched = %q, want none", missing.VerificationChecksumMismatched)
	case missing.VerificationChecksum != "ab":
		t.Errorf("missing copy: verification_checksum = %q, want the last local checksum %q kept", missing.VerificationChecksum, "ab")
	case missing.VerificationState != registry.VerificationFailed || !strings.HasPrefix(missing.VerificationFailure, "missing on the secondary"):
		t.Errorf("missing copy: verification %v %q, want failed with the reason", missing.VerificationState, missing.VerificationFailure)
	case missing.State != registry.StateFailed || !strings.HasPrefix(missing.LastSyncFailure, "verification failed: missing on the secondary"):
		t.Errorf("missing copy: sync state %v %q, want failed for a new download", missing.State, missing.LastSyncFailure)
	}

	mismatch := mustGet(t, s, "a", 2)
	if !mismatch.ChecksumMismatch || mismatch.VerificationChecksum != local || mismatch.VerificationChecksumMismatched != primary ||
		mismatch.State != registry.StateFailed {
		t.Errorf("mismatch: checksum_mismatch %v, local %q, mismatched %q, state %v; want true, both checksums, failed",
			mismatch.ChecksumMismatch, mismatch.VerificationChecksum, mismatch.VerificationChecksumMismatched, mismatch.State)
	}
}
