package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/pquerna/otp/totp"
)

// chromiumPath is Debian's Chromium, which `make deps` installs.
const chromiumPath = "/usr/bin/chromium"

// screenshotDir collects a picture of every page the browser tests visit,
// for a person to look at; it is ignored by git.
var screenshotDir = filepath.Join("..", "testdata", "screenshots")

// One browser serves every browser test of the binary: starting Chromium
// takes about half a second, a new isolated tab a few milliseconds.
var (
	browserOnce sync.Once
	browserCtx  context.Context
	browserErr  error
)

func sharedBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the browser tests need Chromium at %s; `make deps` (part of `make test`) installs it: %v", chromiumPath, err)
	}
	browserOnce.Do(func() {
		opts := []chromedp.ExecAllocatorOption{
			chromedp.ExecPath(chromiumPath),
			chromedp.Flag("headless", true),
			chromedp.Flag("no-sandbox", true), // tests may run as root
			chromedp.Flag("disable-gpu", true),
			chromedp.Flag("disable-dev-shm-usage", true),
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true),
			chromedp.Flag("disable-extensions", true),
			chromedp.Flag("disable-default-apps", true),
			chromedp.Flag("no-first-run", true),
			chromedp.Flag("no-default-browser-check", true),
			chromedp.Flag("password-store", "basic"),
			chromedp.WindowSize(1280, 900),
		}
		// The browser lives as long as the test binary; Chromium is
		// killed with it (chromedp sets the parent-death signal).
		actx, _ := chromedp.NewExecAllocator(context.Background(), opts...)
		bctx, _ := chromedp.NewContext(actx)
		start := time.Now()
		browserErr = chromedp.Do(bctx)
		browserCtx = bctx
		fmt.Fprintf(os.Stderr, "browser tests: Chromium started in %v\n", time.Since(start).Round(time.Millisecond))
	})
	if browserErr != nil {
		t.Fatalf("starting Chromium at %s: %v", chromiumPath, browserErr)
	}
	return browserCtx
}

// tab is one browser tab with its own cookies, pointed at one server.
type tab struct {
	t       *testing.T
	ctx     context.Context
	base    string
	dialogs atomic.Int32
}

// newTab opens a tab in a fresh browser context (its own cookie jar). The
// test fails if any JavaScript dialog opens in it: no page of the bridge
// opens one, so a dialog would mean injected script ran.
func newTab(t *testing.T, base string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(sharedBrowser(t), chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	b := &tab{t: t, ctx: ctx, base: base}
	var mu sync.Mutex
	var messages []string
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			b.dialogs.Add(1)
			mu.Lock()
			messages = append(messages, ev.Message)
			mu.Unlock()
			// Close it, or the page stays blocked.
			go chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()
	t.Cleanup(func() {
		if n := b.dialogs.Load(); n > 0 {
			mu.Lock()
			defer mu.Unlock()
			t.Errorf("%d JavaScript dialog(s) opened: %q", n, messages)
		}
	})
	return b
}

// within runs f with a deadline, so a page that never loads fails the
// test instead of hanging it.
func (b *tab) within(f func(ctx context.Context) error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := f(ctx); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// open loads path and returns the HTTP status of the page it ends on.
func (b *tab) open(path string) int64 {
	b.t.Helper()
	var status int64
	b.within(func(ctx context.Context) error {
		resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(b.base+path))
		if err == nil {
			status = resp.Status
		}
		return err
	})
	return status
}

// click clicks the element sel, which loads a new page, and returns that
// page's HTTP status.
func (b *tab) click(sel string) int64 {
	b.t.Helper()
	var status int64
	b.within(func(ctx context.Context) error {
		resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel)))
		if err == nil {
			status = resp.Status
		}
		return err
	})
	return status
}

// fill types text into the field sel, replacing what it held.
func (b *tab) fill(sel, text string) {
	b.t.Helper()
	b.within(func(ctx context.Context) error {
		return chromedp.Do(ctx, chromedp.Clear(chromedp.CSS(sel)), chromedp.SendKeys(chromedp.CSS(sel), text))
	})
}

// text returns the visible text of the first element sel.
func (b *tab) text(sel string) string {
	b.t.Helper()
	var s string
	b.within(func(ctx context.Context) error {
		var err error
		s, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		return err
	})
	return s
}

// attr returns attribute name of the first element sel.
func (b *tab) attr(sel, name string) string {
	b.t.Helper()
	var v string
	b.within(func(ctx context.Context) error {
		res, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(sel), name))
		v = res.Value
		return err
	})
	return v
}

// count returns how many elements match sel, without waiting.
func (b *tab) count(sel string) int {
	b.t.Helper()
	var n int
	b.within(func(ctx context.Context) error {
		var err error
		n, err = chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
		return err
	})
	return n
}

// path returns the path and query of the page shown.
func (b *tab) path() string {
	b.t.Helper()
	var loc string
	b.within(func(ctx context.Context) error {
		var err error
		loc, err = chromedp.Run(ctx, chromedp.Location())
		return err
	})
	return strings.TrimPrefix(loc, b.base)
}

// shot saves a full-page screenshot as testdata/screenshots/NAME.png.
func (b *tab) shot(name string) {
	b.t.Helper()
	var png []byte
	b.within(func(ctx context.Context) error {
		var err error
		png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
		return err
	})
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(screenshotDir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// cookie returns the browser's cookie name for the server.
func (b *tab) cookie(name string) *network.Cookie {
	b.t.Helper()
	var found *network.Cookie
	b.within(func(ctx context.Context) error {
		res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{b.base + "/"}})
		for _, c := range res.Cookies {
			if c.Name == name {
				found = c
			}
		}
		return err
	})
	if found == nil {
		b.t.Fatalf("no cookie %s in the browser", name)
	}
	return found
}

// consoleToken is the admin token of the browser tests' installations.
const consoleToken = "browser-test-admin-token-0123"

// currentCode returns the authenticator code for secret now.
func currentCode(t *testing.T, secret string) string {
	t.Helper()
	code, err := totp.GenerateCode(secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// signIn signs in with the admin token and sets up the authenticator from
// the secret on the page, as a person with a phone would; it returns the
// secret and leaves the tab on the page signing in leads to.
func (b *tab) signIn() string {
	b.t.Helper()
	b.open("/admin/login")
	b.fill("#token", consoleToken)
	if st := b.click("form button[type=submit]"); st != 200 {
		b.t.Fatalf("after the token: HTTP %d", st)
	}
	secret := strings.TrimSpace(b.text("#totp-secret"))
	b.fill("#code", currentCode(b.t, secret))
	if st := b.click("form button[type=submit]"); st != 200 || strings.HasPrefix(b.path(), "/admin/login") {
		b.t.Fatalf("after the code: HTTP %d at %s", st, b.path())
	}
	return secret
}

// serveConsole starts an installation with an admin token set.
func serveConsole(t *testing.T, settings ...string) (*inst, *server) {
	t.Helper()
	in := newInst(t)
	if r := in.run(append([]string{"config", "set", "admin.token=" + consoleToken}, settings...)...); r.code != 0 {
		t.Fatalf("config set: %+v", r)
	}
	return in, in.serve()
}
