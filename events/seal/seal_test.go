package seal_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/syvault/syvault/events/seal"
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
