package registry_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

func TestNewStoreValidates(t *testing.T) {
	t.Parallel()
	if _, err := regstore.NewStore(nil, regstore.Options{}); err == nil {
		t.Error("NewStore(nil db) = nil error, want one")
	}
	db := pg.NewDatabase(t)
	_, err := regstore.NewStore(db, regstore.Options{MaxFailureLen: -1})
	if err == nil || !strings.Contains(err.Error(), "MaxFailureLen") {
		t.Errorf("NewStore(MaxFailureLen -1) = %v, want an error naming MaxFailureLen", err)
	}
}

func TestStateStrings(t *testing.T) {
	t.Parallel()
	for s, want := range map[registry.State]string{
		registry.StatePending: "pending", registry.StateStarted: "started",
		registry.StateSynced: "synced", registry.StateFailed: "failed", 9: "state(9)",
	} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", int(s), got, want)
		}
	}
	for s, want := range map[registry.VerificationState]string{
		registry.VerificationPending: "pending", registry.VerificationStarted: "started",
		registry.VerificationSucceeded: "succeeded", registry.VerificationFailed: "failed",
		registry.VerificationDisabled: "disabled", 7: "verification_state(7)",
	} {
		if got := s.String(); got != want {
			t.Errorf("VerificationState(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}

func TestGetNotFound(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, regstore.Options{})
	if _, err := s.Get(context.Background(), "a", 1); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get of a missing row = %v, want ErrNotFound", err)
	}
}

func TestResync(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newStore(t, regstore.Options{})
	mustMarkPending(t, s, "a", 1, 2, 3, 4)
	var claims []regstore.Claim
	for i := 0; i < 3; i++ {
		claims = append(claims, claimOne(t, s, "w", "a"))
	}
	// 1 synced, 2 and 3 failed, 4 pending.
	if ok, err := s.SettleSynced(ctx, "w", claims[0], regstore.SyncedResult{BlobKey: "k"}, nil); !ok || err != nil {
		t.Fatal(ok, err)
	}
	for _, c := range claims[1:] {
		if ok, err := s.SettleFailed(ctx, "w", c, "x", false); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	check := func(name string, got int64, err error, want int64) {
		t.Helper()
		if err != nil || got != want {
			t.Fatalf("%s = %d, %v; want %d, nil", name, got, err, want)
		}
	}
	n, err := s.CountResyncBatches(ctx, "a", registry.BatchOptions{OnlyFailed: true})
	check("CountResyncAll(onlyFailed)", n, err, 2)
	n, err = s.CountResyncBatches(ctx, "a", registry.BatchOptions{OnlyFailed: false})
	check("CountResyncAll(all)", n, err, 3)
	n, err = s.CountResync(ctx, "a", []int64{1, 99})
	check("CountResync(1, 99)", n, err, 1)
	if r := mustGet(t, s, "a", 2); r.State != registry.StateFailed {
		t.Fatalf("dry run changed row 2: %v", r.State)
	}

	prog, err := s.ResyncBatches(ctx, "a", registry.BatchOptions{OnlyFailed: true})
	n = prog.Changed
	check("ResyncAll(onlyFailed)", n, err, 2)
	if r := mustGet(t, s, "a", 1); r.State != registry.StateSynced {
		t.Fatalf("ResyncAll(onlyFailed) touched synced row 1: %v", r.State)
	}
	if r := mustGet(t, s, "a", 2); r.State != registry.StatePending || r.RetryCount != 0 || r.Seq <= claims[1].Seq {
		t.Fatalf("resynced failed row = %+v, want pending, retry_count 0, new seq", r)
	}
	n, err = s.Resync(ctx, "a", []int64{1, 99})
	check("Resync(1, 99)", n, err, 1)
	if _, err := s.Get(ctx, "a", 99); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Resync inserted untracked id 99: %v", err)
	}
	if r := mustGet(t, s, "a", 1); r.State != registry.StatePending || r.Seq <= claims[0].Seq {
		t.Fatalf("resynced synced row = %+v, want pending with a new seq", r)
	}
	prog, err = s.ResyncBatches(ctx, "a", registry.BatchOptions{OnlyFailed: false})
	n = prog.Changed
	check("ResyncAll(all) with everything pending", n, err, 0)
}

func TestPauseResume(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newStore(t, regstore.Options{})
	mustMarkPending(t, s, "a", 1)
	mustMarkPending(t, s, "b", 1)
	for i := 0; i < 2; i++ { // pausing twice is a no-op
		if err := s.Pause(ctx, "a"); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := s.Paused(ctx); err != nil || len(p) != 1 || p["a"].IsZero() {
		t.Fatalf("Paused() = %v, %v; want a, with when it was paused", p, err)
	}
	cs := mustClaim(t, s, "w", time.Minute, regstore.TypeLimit{Replicable: "a", Limit: 5}, regstore.TypeLimit{Replicable: "b", Limit: 5})
	if len(cs) != 1 || cs[0].Replicable != "b" {
		t.Fatalf("claims with a paused = %+v, want only b's row", cs)
	}
	if err := s.Resume(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if c := claimOne(t, s, "w", "a"); c.ModelID != 1 {
		t.Fatalf("claim after Resume = %+v", c)
	}
}
