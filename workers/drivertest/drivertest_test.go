package drivertest

import (
	"errors"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
)

func TestNames(t *testing.T) {
	if u := NewUsername(); !regexp.MustCompile(`^vf_tmp_[0-9a-z]{8}$`).MatchString(u) {
		t.Errorf("NewUsername() = %q", u)
	}
	if uid := NewRecordUID(); !regexp.MustCompile(`^[0-9A-Za-z]{16}$`).MatchString(uid) {
		t.Errorf("NewRecordUID() = %q", uid)
	}
	if p := NewPassword(); !strings.Contains(p, "'") || len(p) < 20 {
		t.Errorf("NewPassword() = %q: want a long password holding a quote", p)
	}
	if a, b := NewUsername(), NewUsername(); a == b {
		t.Error("two usernames are equal")
	}
}

func TestParallel(t *testing.T) {
	var n atomic.Int64
	boom := errors.New("boom")
	errs := parallel(16, func(i int) error {
		n.Add(1)
		if i == 3 {
			return boom
		}
		return nil
	})
	if n.Load() != 16 || len(errs) != 16 || !errors.Is(errs[3], boom) || errs[2] != nil {
		t.Fatalf("calls = %d, errs = %v", n.Load(), errs)
	}
}
