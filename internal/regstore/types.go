package regstore

import "github.com/geoframework/geo/registry"

// The registry's public row, state and count types, under the names this
// package has always used for them.
type (
	Key               = registry.Key
	Row               = registry.Row
	State             = registry.State
	VerificationState = registry.VerificationState
	Counts            = registry.Counts
	TypeCounts        = registry.TypeCounts
	Process           = registry.Process
	ProcessBackfill   = registry.ProcessBackfill
	ProcessEventLag   = registry.ProcessEventLag
	ChecksumState     = registry.ChecksumState
	ChecksumRow       = registry.ChecksumRow
)

// The states, as registry defines them.
const (
	StatePending          = registry.StatePending
	StateStarted          = registry.StateStarted
	StateSynced           = registry.StateSynced
	StateFailed           = registry.StateFailed
	VerificationPending   = registry.VerificationPending
	VerificationStarted   = registry.VerificationStarted
	VerificationSucceeded = registry.VerificationSucceeded
	VerificationFailed    = registry.VerificationFailed
	VerificationDisabled  = registry.VerificationDisabled
)
