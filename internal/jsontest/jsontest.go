// Package jsontest holds payloads to the decoder SyVault reads them with
// (events.Unmarshal): they must read exactly as encoding/json reads them.
package jsontest

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/syvault/syvault/events"
)

// SameAsEncodingJSON decodes data into a fresh T with events.Unmarshal and with
// encoding/json and fails unless both agree, errors and partly decoded values included.
func SameAsEncodingJSON[T any](t testing.TB, data []byte) {
	t.Helper()
	var got, want T
	errGot, errWant := events.Unmarshal(data, &got), json.Unmarshal(data, &want)
	if (errGot == nil) != (errWant == nil) {
		t.Fatalf("%s: events.Unmarshal error %v, encoding/json error %v", data, errGot, errWant)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\nevents.Unmarshal %+v\nencoding/json    %+v", data, got, want)
	}
}

// BenchmarkDecoders decodes v's JSON into a fresh T with encoding/json and with
// events.Unmarshal, one sub-benchmark each.
func BenchmarkDecoders[T any](b *testing.B, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		decode func([]byte, any) error
	}{{"encoding-json", json.Unmarshal}, {"events.Unmarshal", events.Unmarshal}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var into T
				if err := bc.decode(data, &into); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
