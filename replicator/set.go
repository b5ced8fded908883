package replicator

import (
	"errors"
	"fmt"
	"sort"

	"github.com/geoframework/geo/strategy"
)

// ErrDuplicate is returned (wrapped) by Set.Register for a name already
// registered.
var ErrDuplicate = errors.New("replicable already registered")

// ErrUnsupportedKind is returned (wrapped) by Set.Register for a strategy
// of no kind this version replicates: one that implements none of the
// kinds' interfaces (strategy.BlobStrategy), or several.
var ErrUnsupportedKind = errors.New("strategy of no supported kind")

// Set is the explicit set of registered types of one site, of every kind.
// It is an ordinary value: build it at start-up, register every type, then
// hand it to NewPrimary or NewSecondary. There is no global registry and
// no init() registration. A Set must not be modified after it is handed
// over.
type Set struct {
	byName map[string]entry
	names  []string
}

// entry is one registered type: its strategy and the kind that drives it.
type entry struct {
	s    strategy.Strategy
	kind kind
}

// NewSet returns an empty set.
func NewSet() *Set { return &Set{byName: map[string]entry{}} }

// Register adds s, a strategy of any supported kind (today
// strategy.BlobStrategy). It returns an error wrapping
// strategy.ErrInvalidName for a name that fails strategy.ValidateName, one
// wrapping ErrDuplicate when the name is already registered, and one
// wrapping ErrUnsupportedKind for a strategy of no kind: all start-up
// errors, never first-event surprises.
func (set *Set) Register(s strategy.Strategy) error {
	if s == nil {
		return fmt.Errorf("replicator: register: %w: nil strategy", ErrUnsupportedKind)
	}
	name := s.Name()
	if err := strategy.ValidateName(name); err != nil {
		return fmt.Errorf("replicator: register: %w", err)
	}
	k, err := kindOf(s)
	if err != nil {
		return fmt.Errorf("replicator: register %q: %w", name, err)
	}
	if _, dup := set.byName[name]; dup {
		return fmt.Errorf("replicator: register: %w: %q", ErrDuplicate, name)
	}
	set.byName[name] = entry{s: s, kind: k}
	set.names = append(set.names, name)
	sort.Strings(set.names)
	return nil
}

// MustRegister is Register that panics on error, for wiring code where a
// bad registration is a programming error.
func (set *Set) MustRegister(s strategy.Strategy) {
	if err := set.Register(s); err != nil {
		panic(err)
	}
}

// Names returns the registered names in ascending order.
func (set *Set) Names() []string { return append([]string(nil), set.names...) }

// Len returns the number of registered types.
func (set *Set) Len() int { return len(set.names) }

// Lookup returns the strategy registered under name.
func (set *Set) Lookup(name string) (strategy.Strategy, bool) {
	e, ok := set.byName[name]
	return e.s, ok
}

// Has reports whether name is registered.
func (set *Set) Has(name string) bool { _, ok := set.byName[name]; return ok }

// kindOf returns the registered type's kind.
func (set *Set) kindOf(name string) (kind, bool) {
	e, ok := set.byName[name]
	return e.kind, ok
}
