package replicator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"path"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/strategy"
)

// QuarantinePrefixDefault is the storage prefix QuarantineOldOnly copies
// old-only bytes under ("" given): <prefix>/<key>.
const QuarantinePrefixDefault = "geo-quarantine"

// RejoinConfig configures ListOldOnly: the old primary's database beside
// the new primary's, for an old primary that rejoins as a secondary.
type RejoinConfig struct {
	// Old is the old primary's database (required; only read). List
	// before it is rewound or rebuilt as a standby of the new primary,
	// which erases what only it had.
	Old *sqlx.DB
	// New is the new primary's database or a standby of it (required).
	// Its Run must have computed the checksums the promotion made pending,
	// or their records are listed as diverged (unknown is not equal).
	New *sqlx.DB
	// Strategies are the types, their adapters reading Old: the keys of
	// the records listed are looked up there (required).
	Strategies *Set
	// BatchSize is the walk's keyset step; 0 means
	// PromoteBatchSizeDefault.
	BatchSize int
}

// OldOnlyRecord is a record whose bytes on the old primary the new primary
// does not have: written (or changed) there after the standby's last
// replay, or its id reused by a different record on the new primary.
type OldOnlyRecord struct {
	Replicable string `json:"replicable"`
	ID         int64  `json:"id"`
	// Key is where the old primary keeps its bytes ("" when the old
	// database no longer names one).
	Key string `json:"key"`
	// OldChecksum and NewChecksum are the two primaries' checksums (""
	// when unknown or, for NewChecksum, when the new primary lacks it).
	OldChecksum string `json:"old_checksum"`
	NewChecksum string `json:"new_checksum"`
	// Diverged is true when the new primary has a record of that id (with
	// other or unknown bytes), false when only the old one has it.
	Diverged bool `json:"diverged"`
}

// OldOnlyReport lists what only the old primary has.
type OldOnlyReport struct {
	// Records are every old-only and diverged record, by type and id.
	Records []OldOnlyRecord `json:"records"`
	// OldOnly and Diverged count them.
	OldOnly  int64 `json:"old_only"`
	Diverged int64 `json:"diverged"`
	// Same is the records both primaries hold with the same checksum.
	Same int64 `json:"same"`
}

// ListOldOnly lists, before an old primary rejoins as a secondary, the
// records its database has that the new primary has not (or has with other
// bytes), by comparing the two geo_checksums tables in keyset batches per
// registered type, and looks their keys up on the old database. The
// records are held in memory: they are what was written after the
// standby's last replay, normally few.
func ListOldOnly(ctx context.Context, cfg RejoinConfig) (OldOnlyReport, error) {
	if cfg.Old == nil || cfg.New == nil || cfg.Strategies == nil {
		return OldOnlyReport{}, fmt.Errorf("%w: RejoinConfig.Old, New and Strategies are required", ErrInvalidConfig)
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = PromoteBatchSizeDefault
	}
	rep := OldOnlyReport{Records: []OldOnlyRecord{}}
	for _, typ := range cfg.Strategies.Names() {
		s, _ := cfg.Strategies.Lookup(typ)
		bs, ok := s.(strategy.BlobStrategy)
		if !ok {
			return rep, fmt.Errorf("replicator: list old-only %s: %w: only blob types are compared", typ, ErrUnsupportedKind)
		}
		if err := listOldOnlyType(ctx, &cfg, typ, bs, &rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func listOldOnlyType(ctx context.Context, cfg *RejoinConfig, typ string, bs strategy.BlobStrategy, rep *OldOnlyReport) error {
	type row struct {
		ModelID  int64          `db:"model_id"`
		Checksum sql.NullString `db:"checksum"`
	}
	after := int64(0)
	for {
		var olds []row
		if err := cfg.Old.SelectContext(ctx, &olds, `SELECT model_id, checksum FROM geo_checksums
WHERE replicable = $1 AND model_id > $2 ORDER BY model_id LIMIT $3`, typ, after, cfg.BatchSize); err != nil {
			return fmt.Errorf("replicator: list old-only %s: the old primary's checksums: %w", typ, err)
		}
		if len(olds) == 0 {
			return nil
		}
		hi := olds[len(olds)-1].ModelID
		var news []row
		if err := cfg.New.SelectContext(ctx, &news, `SELECT model_id, checksum FROM geo_checksums
WHERE replicable = $1 AND model_id > $2 AND model_id <= $3 ORDER BY model_id`, typ, after, hi); err != nil {
			return fmt.Errorf("replicator: list old-only %s: the new primary's checksums: %w", typ, err)
		}
		j := 0
		for _, o := range olds {
			for j < len(news) && news[j].ModelID < o.ModelID {
				j++
			}
			rec := OldOnlyRecord{Replicable: typ, ID: o.ModelID, OldChecksum: o.Checksum.String}
			if j < len(news) && news[j].ModelID == o.ModelID {
				n := news[j]
				if o.Checksum.Valid && n.Checksum.Valid && o.Checksum.String == n.Checksum.String {
					rep.Same++
					continue
				}
				rec.Diverged, rec.NewChecksum = true, n.Checksum.String
				rep.Diverged++
			} else {
				rep.OldOnly++
			}
			key, err := bs.BlobKey(ctx, o.ModelID)
			switch {
			case errors.Is(err, strategy.ErrNotFound):
			case err != nil:
				return fmt.Errorf("replicator: list old-only %s/%d: key: %w", typ, o.ModelID, err)
			default:
				rec.Key = key
			}
			rep.Records = append(rep.Records, rec)
		}
		if len(olds) < cfg.BatchSize {
			return nil
		}
		after = hi
	}
}

// QuarantineOldOnly copies the bytes at each listed record's key in
// storage (the old primary's, which the rejoined site keeps) to
// <prefix>/<key> ("" means QuarantinePrefixDefault), checked against the
// old checksum when known, before the rejoined site syncs: a sync may
// replace bytes at a key the new primary gives other bytes. Keys with no
// bytes are skipped. It returns the copies made and their bytes. It never
// removes anything (RemoveOldOnly does).
func QuarantineOldOnly(ctx context.Context, storage *blob.Bucket, rep OldOnlyReport, prefix string) (copied int, bytes int64, err error) {
	if prefix == "" {
		prefix = QuarantinePrefixDefault
	}
	for _, r := range rep.Records {
		if r.Key == "" {
			continue
		}
		n, err := copyBlob(ctx, storage, r.Key, path.Join(prefix, r.Key), r.OldChecksum)
		if errors.Is(err, blob.ErrNotExist) {
			continue
		}
		if err != nil {
			return copied, bytes, fmt.Errorf("replicator: quarantine %s/%d: %w", r.Replicable, r.ID, err)
		}
		copied++
		bytes += n
	}
	return copied, bytes, nil
}

func copyBlob(ctx context.Context, storage *blob.Bucket, from, to, sum string) (int64, error) {
	r, err := storage.Open(ctx, from)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	w, err := storage.Create(ctx, to, &blob.WriteOptions{SHA256: sum})
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(w, r)
	if err != nil {
		_ = w.Abort()
		return 0, err
	}
	return n, w.Commit(ctx)
}

// RemoveOldOnly removes from storage the bytes at the listed records' keys
// that no registry row of the rejoined site's tracking database records or
// stages (R7: a key an old-only record shares with a live one stays), each
// check atomic with its removal. Run it once the rejoined site's first
// consistency pass finished, so its registry names every live key. It
// returns the keys removed and those kept, one transaction per type; on an
// error, those of the types done before it.
func RemoveOldOnly(ctx context.Context, tracking *sqlx.DB, storage *blob.Bucket, rep OldOnlyReport) (removed, kept []string, err error) {
	store, err := regstore.NewStore(tracking, regstore.Options{})
	if err != nil {
		return nil, nil, fmt.Errorf("replicator: remove old-only: %w", err)
	}
	byType := map[string][]string{}
	var types []string
	for _, r := range rep.Records {
		if r.Key == "" {
			continue
		}
		if _, ok := byType[r.Replicable]; !ok {
			types = append(types, r.Replicable)
		}
		byType[r.Replicable] = append(byType[r.Replicable], r.Key)
	}
	for _, typ := range types {
		rm, kp, err := store.RemoveUnreferenced(ctx, typ, byType[typ], func(ctx context.Context, key string) error {
			return storage.Remove(ctx, key)
		})
		if err != nil {
			return removed, kept, fmt.Errorf("replicator: remove old-only: %w", err)
		}
		removed, kept = append(removed, rm...), append(kept, kp...)
	}
	return removed, kept, nil
}
