// Package replicator turns the registry (what the secondary tracks) and a
// strategy (what an adopter says about a type) into replication: the
// Replicator interface, the explicit set of registered types, and the
// engines that drive every registered type.
package replicator
