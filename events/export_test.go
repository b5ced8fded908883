package events

// Test-only access to the consumer's SQL, so tests can EXPLAIN it.
const (
	FetchQuery = fetchQuery
	LagQuery   = lagQuery
)
