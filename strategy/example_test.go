package strategy_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/geoframework/geo/strategy"
)

// attachments is an adapter over an in-memory table, so the example runs
// alone; a real one queries the application's database with a keyset
// query and a prepared statement (examples/upload).
type attachments struct {
	files map[int64]string // id → file name
}

var _ strategy.BlobStrategy = attachments{}

// Name is persisted in geo's rows and events: never change or reuse it.
func (a attachments) Name() string { return "attachment" }

// IDs returns up to limit ids greater than after, ascending.
func (a attachments) IDs(ctx context.Context, after int64, limit int) ([]int64, error) {
	var ids []int64
	for id := range a.files {
		if id > after {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids[:min(limit, len(ids))], nil
}

// BlobKey returns where the record's bytes live, or an error matching
// ErrNotFound for a record that does not exist (or is out of scope).
func (a attachments) BlobKey(ctx context.Context, id int64) (string, error) {
	name, ok := a.files[id]
	if !ok {
		return "", fmt.Errorf("attachment %d: %w", id, strategy.ErrNotFound)
	}
	return "attachments/" + strconv.FormatInt(id, 10) + "/" + name, nil
}

// A blob type's adapter is these three methods: a stable name, its record
// ids in ascending pages, and a storage key per record. The engines page
// through IDs as below for backfill and orphan removal, and treat
// ErrNotFound as "must not be on a secondary".
func ExampleBlobStrategy() {
	ctx := context.Background()
	s := attachments{files: map[int64]string{1: "a.pdf", 3: "b.png", 4: "c.txt", 9: "d.zip"}}
	fmt.Println(strategy.ValidateName(s.Name()))
	for after := int64(0); ; {
		ids, _ := s.IDs(ctx, after, 3)
		fmt.Println(ids)
		if len(ids) < 3 { // fewer than limit: the end
			break
		}
		after = ids[len(ids)-1]
	}
	key, _ := s.BlobKey(ctx, 3)
	fmt.Println(key, strategy.ValidateKey(key))
	_, err := s.BlobKey(ctx, 2)
	fmt.Println(errors.Is(err, strategy.ErrNotFound), err)
	// Output:
	// <nil>
	// [1 3 4]
	// [9]
	// attachments/3/b.png <nil>
	// true attachment 2: record not found
}
