package replicator_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/strategy"
)

// files is a minimal strategy for the examples.
type files struct{ name string }

func (f files) Name() string { return f.name }
func (f files) IDs(ctx context.Context, after int64, limit int) ([]int64, error) {
	return nil, nil
}
func (f files) BlobKey(ctx context.Context, id int64) (string, error) {
	return "", strategy.ErrNotFound
}

// ids is a strategy of no kind: it lists ids but says nowhere where a
// record's data lives.
type ids struct{ name string }

func (i ids) Name() string { return i.name }
func (i ids) IDs(ctx context.Context, after int64, limit int) ([]int64, error) {
	return nil, nil
}

// A Set is built explicitly at start-up; a duplicate or invalid name, or a
// strategy of no kind geo replicates, is an error then, not at the first
// event.
func ExampleSet_Register() {
	set := replicator.NewSet()
	fmt.Println(set.Register(files{"package_file"}))
	err := set.Register(files{"package_file"})
	fmt.Println(errors.Is(err, replicator.ErrDuplicate), err)
	err = set.Register(files{"Package File"})
	fmt.Println(errors.Is(err, strategy.ErrInvalidName))
	err = set.Register(ids{"rows"})
	fmt.Println(errors.Is(err, replicator.ErrUnsupportedKind))
	fmt.Println(set.Names())
	// Output:
	// <nil>
	// true replicator: register: replicable already registered: "package_file"
	// true
	// true
	// [package_file]
}
