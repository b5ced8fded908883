package events

import (
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"
)

func TestDecode(t *testing.T) {
	key := func(s string) *string { return &s }
	good := rawEvent{XID: "42", ID: 7, Replicable: "upload", Op: 3, ModelID: 9, BlobKey: key("k"), Payload: []byte(`{"a":1}`), CreatedAt: time.Unix(1, 0)}
	e, err := decode(good)
	if err != nil {
		t.Fatalf("decode(good) = %v", err)
	}
	if e.XID != 42 || e.ID != 7 || e.Op != OpDeleted || e.ModelID != 9 || e.BlobKey != "k" || string(e.Payload) != `{"a":1}` {
		t.Fatalf("decode(good) = %+v", e)
	}
	for name, mutate := range map[string]func(*rawEvent){
		"bad xid":         func(r *rawEvent) { r.XID = "-1" },
		"op 0":            func(r *rawEvent) { r.Op = 0 },
		"op 4":            func(r *rawEvent) { r.Op = 4 },
		"model 0":         func(r *rawEvent) { r.ModelID = 0 },
		"no name":         func(r *rawEvent) { r.Replicable = "" },
		"deleted nil key": func(r *rawEvent) { r.BlobKey = nil },
		"deleted no key":  func(r *rawEvent) { r.BlobKey = key("") },
		"NUL key":         func(r *rawEvent) { r.BlobKey = key("a\x00") },
		"bad payload":     func(r *rawEvent) { r.Payload = []byte(`{`) },
	} {
		r := good
		mutate(&r)
		if _, err := decode(r); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: decode = %v, want ErrMalformed", name, err)
		}
	}
}

// FuzzDecode: decode never panics, and whatever it accepts satisfies the
// contract the Handler is promised.
func FuzzDecode(f *testing.F) {
	f.Add("42", int64(1), "upload", int64(1), int64(1), true, "k", []byte(`{"a":1}`))
	f.Add("18446744073709551615", int64(2), "package_file", int64(3), int64(9), false, "", []byte(nil))
	f.Add("x", int64(0), "", int64(-1), int64(0), true, "\x00", []byte(`{`))
	f.Fuzz(func(t *testing.T, xid string, id int64, name string, op, model int64, hasKey bool, key string, payload []byte) {
		r := rawEvent{XID: xid, ID: id, Replicable: name, Op: op, ModelID: model, Payload: payload}
		if hasKey {
			r.BlobKey = &key
		}
		e, err := decode(r)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("decode error %v does not match ErrMalformed", err)
			}
			return
		}
		if !e.Op.Valid() || e.ModelID <= 0 || e.Replicable == "" {
			t.Fatalf("accepted invalid event %+v", e)
		}
		if e.Op == OpDeleted && e.BlobKey == "" {
			t.Fatalf("accepted deleted event without key %+v", e)
		}
		if e.Payload != nil && !json.Valid(e.Payload) {
			t.Fatalf("accepted invalid payload %q", e.Payload)
		}
		if want, _ := strconv.ParseUint(xid, 10, 64); e.XID != want {
			t.Fatalf("xid %q decoded as %d", xid, e.XID)
		}
	})
}
