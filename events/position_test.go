package events_test

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/events"
)

// TestPositionOrder: positions are ordered by xid first, then id, so an
// event of an older transaction comes first even when its id is greater
// (it took its id after a younger transaction's event).
func TestPositionOrder(t *testing.T) {
	t.Parallel()
	ordered := []events.Position{
		{},
		{XID: 1, ID: 0},
		{XID: 1, ID: 9},
		{XID: 2, ID: 3},
		{XID: 2, ID: math.MaxInt64},
		{XID: 3, ID: 1},
		{XID: math.MaxUint64, ID: 0},
		{XID: math.MaxUint64, ID: math.MaxInt64},
	}
	for i, p := range ordered {
		for j, q := range ordered {
			want := 0
			switch {
			case i < j:
				want = -1
			case i > j:
				want = 1
			}
			assert.Equal(t, want, p.Compare(q), "%v.Compare(%v)", p, q)
			assert.Equal(t, i < j, p.Less(q), "%v.Less(%v)", p, q)
		}
	}
	shuffled := slices.Clone(ordered)
	slices.Reverse(shuffled)
	slices.SortFunc(shuffled, events.Position.Compare)
	assert.Equal(t, ordered, shuffled, "sorted with Compare")

	assert.True(t, events.Position{}.IsZero())
	assert.False(t, events.Position{XID: 1}.IsZero())
	assert.False(t, events.Position{ID: 1}.IsZero())
	assert.Equal(t, events.Position{XID: 4, ID: 2}, events.Event{XID: 4, ID: 2, ModelID: 7}.Position())
}

// TestPositionText: the text form round-trips through String and
// ParsePosition, and through JSON as a string.
func TestPositionText(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		p    events.Position
		text string
	}{
		{events.Position{}, "0:0"},
		{events.Position{XID: 7451, ID: 1203}, "7451:1203"},
		{events.Position{XID: 3, ID: 0}, "3:0"},
		{events.Position{XID: math.MaxUint64, ID: math.MaxInt64}, "18446744073709551615:9223372036854775807"},
	} {
		assert.Equal(t, c.text, c.p.String())
		got, err := events.ParsePosition(c.text)
		require.NoError(t, err, c.text)
		assert.Equal(t, c.p, got, c.text)

		b, err := json.Marshal(struct{ P events.Position }{c.p})
		require.NoError(t, err)
		assert.JSONEq(t, `{"P":"`+c.text+`"}`, string(b))
		var back struct{ P events.Position }
		require.NoError(t, json.Unmarshal(b, &back))
		assert.Equal(t, c.p, back.P, "JSON round trip")
	}
	var p events.Position
	require.NoError(t, p.UnmarshalText([]byte("5:6")))
	err := p.UnmarshalText([]byte("5:x"))
	assert.ErrorIs(t, err, events.ErrInvalidPosition)
	assert.Equal(t, events.Position{XID: 5, ID: 6}, p, "a failed UnmarshalText leaves the Position unchanged")
	assert.ErrorIs(t, json.Unmarshal([]byte(`{"P":"1"}`), &struct{ P events.Position }{}), events.ErrInvalidPosition)
}

// TestParsePositionRefusesNonCanonicalText: only the form String writes is
// accepted, and every refusal says why and matches ErrInvalidPosition.
func TestParsePositionRefusesNonCanonicalText(t *testing.T) {
	t.Parallel()
	for text, why := range map[string]string{
		"":                             "no colon",
		"12":                           "no colon",
		":":                            "xid empty",
		":1":                           "xid empty",
		"1:":                           "id empty",
		"1:2:3":                        "id not a decimal number",
		"01:2":                         "xid has a leading zero",
		"1:02":                         "id has a leading zero",
		"00:0":                         "xid has a leading zero",
		"+1:2":                         "xid not a decimal number",
		"1:-2":                         "id not a decimal number",
		" 1:2":                         "xid not a decimal number",
		"1:2 ":                         "id not a decimal number",
		"1 :2":                         "xid not a decimal number",
		"0x1:2":                        "xid not a decimal number",
		"1_0:2":                        "xid not a decimal number",
		"１:2":                          "xid not a decimal number",
		"1\x00:2":                      "xid not a decimal number",
		"1/2":                          "no colon",
		"18446744073709551616:0":       "xid out of range",
		"99999999999999999999:0":       "xid out of range",
		"0:9223372036854775808":        "id out of range",
		strings.Repeat("9", 41):        "longer than 40 bytes",
		"1:" + strings.Repeat("0", 39): "longer than 40 bytes",
	} {
		p, err := events.ParsePosition(text)
		if !assert.ErrorIs(t, err, events.ErrInvalidPosition, "%q", text) {
			continue
		}
		assert.Contains(t, err.Error(), why, "%q", text)
		assert.True(t, p.IsZero(), "%q: position %v with an error", text, p)
	}
	long := strings.Repeat("7", 1<<20)
	_, err := events.ParsePosition(long)
	require.ErrorIs(t, err, events.ErrInvalidPosition)
	assert.Less(t, len(err.Error()), 200, "the error quotes a megabyte of hostile input")
}

// FuzzParsePosition: whatever the input (it comes from an HTTP header),
// ParsePosition does not panic; it either returns the Position whose
// String is exactly the input or an error matching ErrInvalidPosition,
// short whatever the input's length.
func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{
		"0:0", "1:2", "7451:1203", "18446744073709551615:9223372036854775807",
		"", ":", "1:", ":1", "01:1", "1:-1", "+1:1", " 1:1", "1:2:3",
		"18446744073709551616:0", "0:9223372036854775808", "１:1", "1\x00:1",
		"\xff:\xfe", strings.Repeat("1", 41), strings.Repeat(":", 100),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := events.ParsePosition(s)
		if err != nil {
			if !errors.Is(err, events.ErrInvalidPosition) {
				t.Fatalf("ParsePosition(%q) = %v, not matching ErrInvalidPosition", s, err)
			}
			if !p.IsZero() {
				t.Fatalf("ParsePosition(%q) = %v with an error", s, p)
			}
			if n := len(err.Error()); n > 300 {
				t.Fatalf("ParsePosition(%q): error of %d bytes", s, n)
			}
			return
		}
		if p.String() != s {
			t.Fatalf("ParsePosition(%q) = %v, whose String is %q", s, p, p.String())
		}
		var q events.Position
		b, _ := p.MarshalText()
		if err := q.UnmarshalText(b); err != nil || q != p {
			t.Fatalf("text round trip of %v: %v, %v", p, q, err)
		}
	})
}
