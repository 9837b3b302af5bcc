package seal_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/syvault/syvault/internal/seal"
)

func TestSealer(t *testing.T) {
	s, err := seal.New(seal.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("xK9#mP2$qR7wL4nB")
	sealed := s.Seal(secret, []byte("lease-1"))
	if bytes.Contains(sealed, secret) {
		t.Fatal("sealed value holds the plaintext")
	}
	t.Run("opens with the same associated data", func(t *testing.T) {
		got, err := s.Open(sealed, []byte("lease-1"))
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("Open = %q, %v", got, err)
		}
	})
	t.Run("refuses another record's associated data", func(t *testing.T) {
		if _, err := s.Open(sealed, []byte("lease-2")); !errors.Is(err, seal.ErrOpen) {
			t.Fatalf("err = %v, want ErrOpen", err)
		}
	})
	t.Run("refuses another key", func(t *testing.T) {
		other, _ := seal.New(seal.NewKey())
		if _, err := other.Open(sealed, []byte("lease-1")); !errors.Is(err, seal.ErrOpen) {
			t.Fatalf("err = %v, want ErrOpen", err)
		}
	})
	t.Run("refuses altered bytes", func(t *testing.T) {
		bad := bytes.Clone(sealed)
		bad[len(bad)-1] ^= 1
		if _, err := s.Open(bad, []byte("lease-1")); !errors.Is(err, seal.ErrOpen) {
			t.Fatalf("err = %v, want ErrOpen", err)
		}
	})
	t.Run("refuses truncated input", func(t *testing.T) {
		if _, err := s.Open(sealed[:5], []byte("lease-1")); !errors.Is(err, seal.ErrOpen) {
			t.Fatalf("err = %v, want ErrOpen", err)
		}
	})
	t.Run("two seals differ", func(t *testing.T) {
		if bytes.Equal(s.Seal(secret, nil), s.Seal(secret, nil)) {
			t.Fatal("nonce reused")
		}
	})
}

// During a master key change values sealed under the old key still open, are told apart
// from those sealed under the new one, and new values are sealed under the new key only.
func TestSealer_PreviousKey(t *testing.T) {
	oldKey, newKey := seal.NewKey(), seal.NewKey()
	before, _ := seal.New(oldKey)
	during, err := seal.New(newKey, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := seal.New(newKey)
	secret := []byte("xK9#mP2$qR7wL4nB")
	old := before.Seal(secret, []byte("t1"))
	if got, current, err := during.OpenCurrent(old, []byte("t1")); err != nil || current || !bytes.Equal(got, secret) {
		t.Fatalf("old value during the change: %q current=%v %v", got, current, err)
	}
	if _, err := during.Open(old, []byte("t2")); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("old value with another record's associated data: %v", err)
	}
	resealed := during.Seal(secret, []byte("t1"))
	if got, current, err := during.OpenCurrent(resealed, []byte("t1")); err != nil || !current || !bytes.Equal(got, secret) {
		t.Fatalf("new value during the change: %q current=%v %v", got, current, err)
	}
	if _, err := before.Open(resealed, []byte("t1")); !errors.Is(err, seal.ErrOpen) {
		t.Fatal("a value sealed during the change opens under the old key")
	}
	if _, err := after.Open(old, []byte("t1")); !errors.Is(err, seal.ErrOpen) {
		t.Fatal("an old value opens once the old key is gone")
	}
	if got, err := after.Open(resealed, []byte("t1")); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("resealed value after the change: %v", err)
	}
	if _, err := seal.New(newKey, []byte("short")); err == nil {
		t.Fatal("a malformed previous key was accepted")
	}
}

func TestParseKey(t *testing.T) {
	k := seal.NewKey()
	got, err := seal.ParseKey(" " + seal.EncodeKey(k) + "\n")
	if err != nil || !bytes.Equal(got, k) {
		t.Fatalf("round trip failed: %v", err)
	}
	if _, err := seal.ParseKey("abcd"); err == nil {
		t.Fatal("short key accepted")
	}
}
