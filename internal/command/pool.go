package command

import (
	"context"

	"github.com/syvault/syvault/workers/driver"
)

// credential is a fresh lease password and, when it could be computed, its SCRAM-SHA-256
// verifier.
type credential struct{ password, verifier string }

// credentialPool keeps up to size fresh password and verifier pairs, made by one
// background goroutine, so that a PostgreSQL create does not wait for the 4096 PBKDF2
// rounds of its verifier: on a machine with spare CPU the create costs the statements
// alone. Pairs live only in memory and each is handed out once; when the pool is empty
// (a burst, a busy machine) a create gets a password alone and the worker computes the
// verifier, as it would without a pool.
type credentialPool struct {
	c    chan credential
	stop context.CancelFunc
	done chan struct{}
}

func newCredentialPool(size int) *credentialPool {
	ctx, cancel := context.WithCancel(context.Background())
	p := &credentialPool{c: make(chan credential, size), stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			password := newPassword()
			verifier, _ := driver.SCRAMVerifier(password)
			select {
			case p.c <- credential{password: password, verifier: verifier}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return p
}

// take returns a prepared pair, or a fresh password without a verifier when none is
// ready.
func (p *credentialPool) take() credential {
	select {
	case c := <-p.c:
		return c
	default:
		return credential{password: newPassword()}
	}
}

// close stops the goroutine and forgets the pairs.
func (p *credentialPool) close() {
	p.stop()
	<-p.done
	for {
		select {
		case <-p.c:
		default:
			return
		}
	}
}
