package replicator

import (
	"errors"
	"fmt"
	"sort"

	"github.com/geoframework/geo/strategy"
)

// ErrDuplicate is returned by Set.Register for a name already registered.
var ErrDuplicate = errors.New("replicable already registered")

// Set is the explicit set of registered blob types of one site. It is an
// ordinary value: build it at start-up, register every type, then hand it
// to NewPrimary or NewSecondary. There is no global registry and no init()
// registration. A Set must not be modified after it is handed over.
type Set struct {
	byName map[string]strategy.BlobStrategy
	names  []string
}

// NewSet returns an empty set.
func NewSet() *Set { return &Set{byName: map[string]strategy.BlobStrategy{}} }

// Register adds s. It returns an error wrapping strategy.ErrInvalidName for
// a name that fails strategy.ValidateName, and one wrapping ErrDuplicate
// when the name is already registered: both are start-up errors, never
// first-event surprises.
func (set *Set) Register(s strategy.BlobStrategy) error {
	if s == nil {
		return errors.New("replicator: register: nil strategy")
	}
	name := s.Name()
	if err := strategy.ValidateName(name); err != nil {
		return fmt.Errorf("replicator: register: %w", err)
	}
	if _, dup := set.byName[name]; dup {
		return fmt.Errorf("replicator: %w: %q", ErrDuplicate, name)
	}
	set.byName[name] = s
	set.names = append(set.names, name)
	sort.Strings(set.names)
	return nil
}

// MustRegister is Register that panics on error, for wiring code where a
// bad registration is a programming error.
func (set *Set) MustRegister(s strategy.BlobStrategy) {
	if err := set.Register(s); err != nil {
		panic(err)
	}
}

// Names returns the registered names in ascending order.
func (set *Set) Names() []string { return append([]string(nil), set.names...) }

// Len returns the number of registered types.
func (set *Set) Len() int { return len(set.names) }

// Lookup returns the strategy registered under name.
func (set *Set) Lookup(name string) (strategy.BlobStrategy, bool) {
	s, ok := set.byName[name]
	return s, ok
}

// Has reports whether name is registered.
func (set *Set) Has(name string) bool { _, ok := set.byName[name]; return ok }
