// Package geotest is the conformance suite an adopter runs for a new blob
// type, and the test kit it stands on (see geotest/pgtest for PostgreSQL).
package geotest
