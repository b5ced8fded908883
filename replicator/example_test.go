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

// A Set is built explicitly at start-up; a duplicate or invalid name is an
// error then, not at the first event.
func ExampleSet_Register() {
	set := replicator.NewSet()
	fmt.Println(set.Register(files{"package_file"}))
	err := set.Register(files{"package_file"})
	fmt.Println(errors.Is(err, replicator.ErrDuplicate), err)
	err = set.Register(files{"Package File"})
	fmt.Println(errors.Is(err, strategy.ErrInvalidName))
	fmt.Println(set.Names())
	// Output:
	// <nil>
	// true replicator: replicable already registered: "package_file"
	// true
	// [package_file]
}
