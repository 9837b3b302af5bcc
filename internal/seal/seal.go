// Package seal encrypts the secrets SyVault must keep (target admin passwords, lease
// passwords) with AES-256-GCM under the master key, so that no event, KV value or log
// holds them in plaintext. Sealed values carry a version byte so the scheme can change.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// KeySize is the master key's length in bytes.
const KeySize = 32

const version byte = 1

// ErrOpen is returned when a sealed value cannot be opened: wrong key or altered bytes.
var ErrOpen = errors.New("seal: cannot open sealed value (wrong master key or corrupted data)")

// Sealer seals values under the master key and opens values sealed under it or under
// a previous master key, so that a master key can be replaced while values sealed under
// the old one are resealed. It is safe for concurrent use.
type Sealer struct {
	aead     cipher.AEAD
	previous []cipher.AEAD
}

// New returns a Sealer sealing under key (32 bytes) and also opening values sealed under
// the previous keys.
func New(key []byte, previous ...[]byte) (*Sealer, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	s := &Sealer{aead: aead}
	for _, p := range previous {
		a, err := newAEAD(p)
		if err != nil {
			return nil, fmt.Errorf("previous %w", err)
		}
		s.previous = append(s.previous, a)
	}
	return s, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("seal: master key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return cipher.NewGCM(block)
}

// NewKey returns a fresh random master key.
func NewKey() []byte {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return k
}

// EncodeKey and ParseKey give the master key's on-disk and environment form: 64 hex digits.
func EncodeKey(key []byte) string { return hex.EncodeToString(key) }

// ParseKey parses the form EncodeKey writes; surrounding white space is ignored.
func ParseKey(s string) ([]byte, error) {
	k, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(k) != KeySize {
		return nil, fmt.Errorf("seal: master key must be %d hex digits", 2*KeySize)
	}
	return k, nil
}

// LoadKeyFile reads a key file written with EncodeKey.
func LoadKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seal: read master key: %w", err)
	}
	return ParseKey(string(b))
}

// Seal encrypts plaintext. associated binds the sealed value to its context (e.g. the
// lease id) so a value cannot be moved to another record and still open.
func (s *Sealer) Seal(plaintext, associated []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize(), 1+s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err)
	}
	out := append([]byte{version}, nonce...)
	return s.aead.Seal(out, nonce, plaintext, associated)
}

// Open decrypts a value made by Seal with the same associated data, under the master key
// or a previous one. It returns ErrOpen when no key opens it, the associated data differ
// or the value was altered.
func (s *Sealer) Open(sealed, associated []byte) ([]byte, error) {
	pt, _, err := s.OpenCurrent(sealed, associated)
	return pt, err
}

// OpenCurrent is Open, also telling whether the value was sealed under the current master
// key: one that was not must be resealed before the previous key can be given up.
func (s *Sealer) OpenCurrent(sealed, associated []byte) (plaintext []byte, current bool, err error) {
	if pt, ok := open(s.aead, sealed, associated); ok {
		return pt, true, nil
	}
	for _, a := range s.previous {
		if pt, ok := open(a, sealed, associated); ok {
			return pt, false, nil
		}
	}
	return nil, false, ErrOpen
}

func open(a cipher.AEAD, sealed, associated []byte) ([]byte, bool) {
	n := a.NonceSize()
	if len(sealed) < 1+n+a.Overhead() || sealed[0] != version {
		return nil, false
	}
	pt, err := a.Open(nil, sealed[1:1+n], sealed[1+n:], associated)
	return pt, err == nil
}
