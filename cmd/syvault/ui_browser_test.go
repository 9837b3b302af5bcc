package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/syvault/syvault/workers/drivertest"
)

// ScreenshotsEnv names the directory the browser tests write their screenshots to; by
// default a new temporary directory, named in the test log.
const ScreenshotsEnv = "SYVAULT_UI_SCREENSHOTS"

// mustChromium returns a headless Chromium context. Without Chromium the test fails
// under CI=true and skips elsewhere, like a missing database.
func mustChromium(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	requireDB(t, "Chromium (Debian's chromium package; deploy/dev/chromium.sh installs it)", err)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
		// The machine may have no internet: every background connection Chromium would
		// try is refused and slows it down, so none is tried.
		chromedp.Flag("headless", true), chromedp.Flag("no-sandbox", true), chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-default-browser-check", true), chromedp.Flag("hide-scrollbars", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// screenshots returns the directory screenshots go to.
func screenshots(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(ScreenshotsEnv)
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "syvault-ui-screenshots-"); err != nil {
			t.Fatal(err)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// shoot saves a screenshot of the page as it is to dir/name.png.
func shoot(dir, name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		png, err := chromedp.FullScreenshot(100)(ctx, t)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644)
	})
}

// do runs the steps in the browser, failing the test at the first error.
func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

// get runs one action that reads the page, failing the test on error.
func get[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

type css = chromedp.CSS

// dropAdmin drops a MariaDB user and ends its sessions, so that a target's pooled admin
// connections cannot go on after it. The marker roles it made go first: once it is gone,
// nothing names them as its own for the test's cleanup to find.
func dropAdmin(t *testing.T, user string) {
	t.Helper()
	root, err := sql.Open("mysql", "root@tcp(127.0.0.1:3306)/")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	drivertest.DropMarkerRoles(root, user)
	if _, err := root.Exec("DROP USER '" + user + "'@'%'"); err != nil {
		t.Fatal(err)
	}
	rows, err := root.Query("SELECT id FROM information_schema.processlist WHERE user = ?", user)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	for _, id := range ids {
		_, _ = root.Exec(fmt.Sprintf("KILL CONNECTION %d", id)) // one that ended meanwhile is fine
	}
}

// TestUI_Browser drives the dashboard in headless Chromium: log in with the link
// `sy ui --no-browser` prints, read the overview, filter the leases, revoke one (its user
// is then gone from the database), and watch the audit page follow new events.
func TestUI_Browser(t *testing.T) {
	f := newUIFixture(t)
	ctx := mustChromium(t)
	shots := screenshots(t)
	base := f.srv.HTTP.URL()

	// A second target, on MariaDB, whose admin is gone by the time a lease is asked for:
	// the overview shows that failure and its reason.
	my := mysqlEngine(t)
	broken := my.target(t)
	broken.Name = "reports-mysql"
	brokenTarget := mustRegister(t, f.admin, broken)
	dropAdmin(t, broken.AdminUsername)
	if _, err := f.admin.CreateLease(context.Background(), brokenTarget.RecordUID, 60); err == nil {
		t.Fatal("a lease on a target whose admin is gone was created")
	}

	t.Run("no session", func(t *testing.T) {
		do(t, ctx, chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(css("#message")), shoot(shots, "login-required"))
		if text := get(t, ctx, chromedp.Text(css("main"))); !strings.Contains(text, "sy ui") {
			t.Fatalf("without a session the dashboard says %q", text)
		}
	})

	t.Run("overview", func(t *testing.T) {
		do(t, ctx, chromedp.Navigate(f.loginLink()), chromedp.WaitVisible(css(`#targets tr[data-record-uid="`+brokenTarget.RecordUID+`"]`)),
			shoot(shots, "overview"))
		text := get(t, ctx, chromedp.Text(css("#targets")))
		active := get(t, ctx, chromedp.Text(css(`tr[data-record-uid="`+f.target.RecordUID+`"] .active-count`)))
		if active != "2" || !strings.Contains(text, f.target.Name) || !strings.Contains(text, "127.0.0.1:5432") ||
			!strings.Contains(text, "target_unavailable") {
			t.Fatalf("overview: %q active on %s; table:\n%s", active, f.target.Name, text)
		}
		cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{})
		if err != nil {
			t.Fatal(err)
		}
		c := cookies.Cookies
		if len(c) != 1 || !c[0].HTTPOnly || c[0].SameSite != network.CookieSameSiteStrict || c[0].Path != "/ui" {
			t.Fatalf("the browser holds %+v; want one HttpOnly, SameSite=Strict session cookie for /ui", c)
		}
	})

	target := f.leases[0]
	t.Run("filter and revoke", func(t *testing.T) {
		// A lease on another target, which the filter must leave out.
		other := mustLease(t, f.admin, mustTarget(t, f.admin, f.eng).RecordUID, 600)
		row := `tr[data-lease-id="` + target.LeaseID + `"]`
		do(t, ctx, chromedp.Navigate(base+"/ui/leases"), chromedp.WaitVisible(css(`tr[data-lease-id="`+other.LeaseID+`"]`)),
			chromedp.SetValue(css(`select[name="record_uid"]`), f.target.RecordUID), chromedp.Submit(css(`#filters`)),
			chromedp.WaitNotPresent(css(`tr[data-lease-id="`+other.LeaseID+`"]`)), chromedp.WaitVisible(css(row)), shoot(shots, "leases"))
		rows := get(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#leases tbody tr")].map(r => r.dataset.leaseId)`))
		if strings.Join(rows, " ") != f.leases[0].LeaseID+" "+f.leases[1].LeaseID {
			t.Fatalf("filtered by target, the list shows %v; want the target's two leases", rows)
		}
		do(t, ctx, chromedp.Click(css(row+` details.revoke summary`)), chromedp.WaitVisible(css(row+` button.danger`)),
			chromedp.Click(css(row+` button.danger`)), chromedp.WaitVisible(css(`#message`)), shoot(shots, "lease"))
		status, msg := get(t, ctx, chromedp.Text(css(`#status`))), get(t, ctx, chromedp.Text(css(`#message`)))
		if status != "revoked" || !strings.Contains(msg, "Revoked") {
			t.Fatalf("after revoking: status %q, message %q", status, msg)
		}
		mustBeGone(t, f.eng, target.Username, 0)
		history := get(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#events td.type")].map(td => td.textContent)`))
		if strings.Join(history, " ") != "lease.requested lease.activated lease.revoked lease.dropped" {
			t.Fatalf("the lease's history shows %v", history)
		}
	})

	t.Run("audit follows", func(t *testing.T) {
		do(t, ctx, chromedp.Navigate(base+"/ui/audit"), chromedp.WaitVisible(css(`#follow`)), chromedp.WaitVisible(css(`#events td.type`)))
		// A lease made now shows up without a reload.
		fresh := mustLease(t, f.admin, f.target.RecordUID, 600)
		do(t, ctx, chromedp.WaitVisible(css(`#events a[title="`+fresh.LeaseID+`"]`)), shoot(shots, "audit"))
	})

	t.Run("activity", func(t *testing.T) {
		do(t, ctx, chromedp.Navigate(base+"/ui/activity?record_uid="+f.target.RecordUID),
			chromedp.WaitVisible(css(`figure.chart svg polyline.active`)), shoot(shots, "activity"))
		// Three leases created on the target, one revoked, two left.
		if caption := get(t, ctx, chromedp.Text(css(`figure.chart figcaption`))); caption != f.target.Name+": 2 active now, 3 created, 1 dropped" {
			t.Fatalf("the chart says %q", caption)
		}
	})

	t.Run("the link works once", func(t *testing.T) {
		link := f.loginLink()
		do(t, ctx, chromedp.Navigate(link), chromedp.WaitVisible(css(`#targets`)), chromedp.Navigate(link), chromedp.WaitVisible(css(`#message`)))
		if text := get(t, ctx, chromedp.Text(css(`#message`))); !strings.Contains(text, "already used") {
			t.Fatalf("the link opened twice says %q", text)
		}
	})
}
