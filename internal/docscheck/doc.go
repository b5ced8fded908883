// Package docscheck checks geo's documentation against its code: that
// every identifier the Markdown documents and the doc comments name exists,
// that doc links ([Type.Method]) resolve, and that doc comments point at the
// repository's documents by a link pkg.go.dev can follow. Its tests are the
// regression guard; the package exports nothing an adopter uses.
package docscheck
