package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/internal/seal"
	"github.com/syvault/syvault/internal/termtext"
	"github.com/syvault/syvault/workers"
)

// Reseal is the middle step of changing the master key. With the servers already running
// on the new key (and the old one as the previous key), it seals every secret SyVault
// still uses under the new key: the access-token keys, and each target's admin password
// (as a target.resealed event, since events are never rewritten). It then says whether
// anything still needs the old key: an active lease whose target was since removed or
// moved is revoked with the admin password of its own snapshot, sealed when it was issued.
func (m *Main) Reseal(ctx context.Context, stdout io.Writer) error {
	if m.Config.PreviousMasterKey == "" && m.Config.PreviousMasterKeyFile == "" {
		return errors.New("reseal needs the master key being replaced: pass it with --previous-master-key-file (or SYVAULT_PREVIOUS_MASTER_KEY), and the new one as the master key")
	}
	defer m.Close()
	sealer, err := m.unsealAndConnect(ctx, false)
	if err != nil {
		return err
	}
	defer m.runProjections(ctx)()

	ring, err := m.openTokenKeys(ctx, sealer)
	if err != nil {
		return err
	}
	n, err := ring.Reseal(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		if err := m.auditKeys(ctx, events.TokenKeysResealed, uuid.NewString(), fmt.Sprintf("%d key(s) sealed under the new master key", n)); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "access-token keys resealed: %d\n", n)

	targets, err := m.proj.Targets(ctx)
	if err != nil {
		return err
	}
	resealed := 0
	var failed []string
	for _, t := range targets {
		bound, err := m.resealTarget(ctx, sealer, t.RecordUID)
		if err != nil {
			// One target that cannot be resealed (a forged one among them) must not
			// keep the others on the old key.
			failed = append(failed, t.RecordUID)
			fmt.Fprintf(stdout, "target %q: not resealed: %s\n", t.RecordUID, termtext.Printable(err.Error()))
			continue
		}
		if bound != nil {
			resealed++
			// Say where it is bound now, for the operator to see each is its target's
			// own. Quoted, so no name can pass for the rest of the line.
			fmt.Fprintf(stdout, "target %q: admin password bound to %q %q at %q port %d, database %q, tls_mode %q, CA %s (name %q)\n",
				bound.RecordUID, bound.Engine, bound.AdminUsername, bound.Host, bound.Port, bound.Database, bound.TLSMode, caFingerprint(bound.CACert), bound.Name)
		}
	}
	fmt.Fprintf(stdout, "targets resealed: %d of %d\n", resealed, len(targets))
	if len(failed) > 0 {
		return fmt.Errorf("%d target(s) could not be resealed (%s): keep the previous master key, and run reseal again once they can", len(failed), strings.Join(failed, ", "))
	}

	waiting, until, err := m.leasesOnOldKey(ctx, sealer)
	if err != nil {
		return err
	}
	if waiting > 0 {
		fmt.Fprintf(stdout, "keep the previous master key until %s: %d active lease(s) of removed or moved targets need it to be revoked\n",
			until.Format(time.RFC3339), waiting)
		return nil
	}
	fmt.Fprintln(stdout, "nothing needs the previous master key any more: restart the servers without it, then destroy it")
	return nil
}

// resealTarget reseals one target's admin password, under the new key and bound to its
// connection, unless it is so already, and returns the target it resealed (nil if none).
// It reads the target from its events and appends after the last of them, so an update
// racing it wins and is resealed on the next turn instead of being overwritten with older
// settings.
func (m *Main) resealTarget(ctx context.Context, sealer *seal.Sealer, uid string) (*events.Target, error) {
	for {
		t, last, err := m.store.LoadTarget(ctx, uid)
		if events.ErrorCode(err) == events.ENotFound {
			return nil, nil // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		pw, resealed, err := workers.OpenAdminPassword(ctx, sealer, workers.NewOrigins(m.store), t)
		if errors.Is(err, seal.ErrOpen) {
			return nil, errors.New("its admin password opens under neither the master key nor the previous one, or not with the connection its events name")
		}
		if err != nil {
			return nil, err
		}
		if resealed {
			return nil, nil
		}
		t.SealedAdminPassword = sealer.Seal(pw, t.AdminPasswordAAD())
		e := events.ResealTarget(t, last, time.Now())
		seq, err := m.store.Append(ctx, events.TargetSubject(uid), e, last)
		if errors.Is(err, jsstore.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return &t, m.proj.WaitTarget(ctx, uid, seq)
	}
}

// leasesOnOldKey counts the active leases that would be revoked with an admin password
// sealed under the previous key (their own snapshot's: see workers' target resolution),
// and the latest of their expiries.
func (m *Main) leasesOnOldKey(ctx context.Context, sealer *seal.Sealer) (n int, until time.Time, err error) {
	current := map[string]*events.Target{}
	origins := workers.NewOrigins(m.store)
	cursor := ""
	for {
		page, next, err := m.proj.ActiveLeases(ctx, events.LeaseQuery{Limit: 1000, Cursor: cursor})
		if err != nil {
			return 0, until, err
		}
		for _, l := range page {
			cur, seen := current[l.RecordUID]
			if !seen {
				if t, err := m.proj.Target(ctx, l.RecordUID); err == nil {
					cur = &t
				} else if events.ErrorCode(err) != events.ENotFound {
					return 0, until, err
				}
				current[l.RecordUID] = cur
			}
			full, err := m.store.LoadLease(ctx, l.ID)
			if err != nil {
				return 0, until, err
			}
			if full.Spec == nil || (cur != nil && cur.SameServer(full.Spec.Target)) {
				continue // revoked with the current, resealed registration
			}
			snap := full.Spec.Target
			if _, ok, _ := workers.OpenAdminPassword(ctx, sealer, origins, snap); !ok {
				n++
				if l.ExpiresAt.After(until) {
					until = l.ExpiresAt
				}
			}
		}
		if next == "" {
			return n, until, nil
		}
		cursor = next
	}
}

// caFingerprint names the CA a target's admin connection verifies against: the system
// roots, or the SHA-256 of its ca_cert text as registered (`printf %s "$CA" | sha256sum`).
func caFingerprint(pem string) string {
	if pem == "" {
		return "system roots"
	}
	sum := sha256.Sum256([]byte(pem))
	return "ca_cert sha256 " + hex.EncodeToString(sum[:])
}
