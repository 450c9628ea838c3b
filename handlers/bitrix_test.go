package handlers

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"wabridge/bitrix"
	"wabridge/bitrix/bitrixtest"
	"wabridge/db"
	"wabridge/db/dbtest"
	"wabridge/queue"
	"wabridge/relay"
	"wabridge/secret"
	"wabridge/settings"
	"wabridge/whatsapp"
)

// memGrants keeps the grant in memory, for the client and the handlers.
type memGrants struct {
	mu sync.Mutex
	g  bitrix.Grant
}

func (m *memGrants) Load(context.Context) (bitrix.Grant, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.g.IsZero() {
		return bitrix.Grant{}, bitrix.ErrNoGrant
	}
	return m.g, nil
}

func (m *memGrants) Save(_ context.Context, g bitrix.Grant) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.g = g
	return nil
}

func (m *memGrants) Forget(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.g = bitrix.Grant{}
	return nil
}

// installBridge is a server installed on the fake portal p, which the
// install made bitrix.portal_url, with p's application token stored.
type installBridge struct {
	s      *Server
	url    string
	grants *memGrants
	p      *bitrixtest.Portal
}

func newInstallBridge(t *testing.T) *installBridge {
	t.Helper()
	d := dbtest.New(t)
	w := d.NewWriter(db.WriterOptions{})
	t.Cleanup(w.Close)
	q := queue.New(queue.Options{DB: d})
	st := settings.New(settings.Options{DB: d, Key: secret.GenerateKey(), Env: func(string) (string, bool) { return "", false }})
	p := bitrixtest.New(t, bitrixtest.Options{})
	grants := &memGrants{}
	portal := bitrix.New(bitrix.Options{Grants: grants, HTTPClient: p.Client(), RatePerSec: 100, Burst: 100,
		PortalURL: func(ctx context.Context) (string, error) { return st.Get(ctx, settings.BitrixPortalURL) }})
	s, err := newServer(Deps{
		DB: d, Writer: w, Queue: q, Settings: st, Files: os.DirFS(".."), Portal: portal, Grants: grants,
		Inbound: relay.New(relay.Options{DB: d, Writer: w, Queue: q, Config: st, Bitrix: portal,
			WhatsApp: whatsapp.New(whatsapp.Options{BaseURL: "http://127.0.0.1:1/v25.0", Token: whatsapp.StaticToken("unused")})}),
		Version: "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.routes())
	t.Cleanup(srv.Close)
	b := &installBridge{s: s, url: srv.URL, grants: grants, p: p}
	if code := b.install(t, p.InstallParams()); code != 200 {
		t.Fatalf("first install: %d", code)
	}
	return b
}

func (b *installBridge) install(t *testing.T, params bitrixtest.InstallParams) int {
	t.Helper()
	q, body := bitrixtest.InstallPOST(params)
	resp, err := bitrixtest.PostInstall(context.Background(), nil, b.url+"/bitrix/install", q, body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (b *installBridge) get(t *testing.T, name string) string {
	t.Helper()
	v, err := b.s.settings.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// startReinstall presses "Start re-install".
func (b *installBridge) startReinstall(t *testing.T) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/admin/credentials/reinstall", strings.NewReader(""))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	b.s.credentialsReinstall(rec, req)
	if rec.Code != http.StatusSeeOther || !b.s.reinstallOpen(context.Background()) {
		t.Fatalf("start re-install: %d, open %v", rec.Code, b.s.reinstallOpen(context.Background()))
	}
}

// TestInstallDecisions: what an installation may change, by where it comes
// from, whose token it carries and whether a re-install was started.
func TestInstallDecisions(t *testing.T) {
	const newToken = "a-new-application-token-00000001"
	tests := []struct {
		name      string
		setup     func(t *testing.T, b *installBridge)
		params    func(b *installBridge, other *bitrixtest.Portal) bitrixtest.InstallParams
		wantCode  int
		wantToken func(b *installBridge) string // the stored application token after
		wantOther bool                          // bitrix.portal_url moved to the other portal
	}{
		{
			name: "same portal again keeps the stored token",
			params: func(b *installBridge, _ *bitrixtest.Portal) bitrixtest.InstallParams {
				ip := b.p.InstallParams()
				ip.ApplicationToken = newToken
				return ip
			},
			wantCode:  200,
			wantToken: func(b *installBridge) string { return b.p.ApplicationToken() },
		},
		{
			name:  "same portal during a re-install replaces the token",
			setup: func(t *testing.T, b *installBridge) { b.startReinstall(t) },
			params: func(b *installBridge, _ *bitrixtest.Portal) bitrixtest.InstallParams {
				ip := b.p.InstallParams()
				ip.ApplicationToken = newToken
				return ip
			},
			wantCode:  200,
			wantToken: func(*installBridge) string { return newToken },
		},
		{
			name: "same portal with another member id",
			params: func(b *installBridge, _ *bitrixtest.Portal) bitrixtest.InstallParams {
				ip := b.p.InstallParams()
				ip.MemberID = "another-member"
				return ip
			},
			wantCode:  403,
			wantToken: func(b *installBridge) string { return b.p.ApplicationToken() },
		},
		{
			name: "installed by a user who is no administrator",
			params: func(b *installBridge, _ *bitrixtest.Portal) bitrixtest.InstallParams {
				ip := b.p.InstallParams()
				b.p.DenyAdmin(ip.AccessToken)
				return ip
			},
			wantCode:  403,
			wantToken: func(b *installBridge) string { return b.p.ApplicationToken() },
		},
		{
			name: "token of another application",
			setup: func(t *testing.T, b *installBridge) {
				if err := b.s.settings.Set(context.Background(), []settings.Pair{{Name: settings.BitrixClientID, Value: "local.other.app"}}); err != nil {
					t.Fatal(err)
				}
			},
			params:    func(b *installBridge, _ *bitrixtest.Portal) bitrixtest.InstallParams { return b.p.InstallParams() },
			wantCode:  403,
			wantToken: func(b *installBridge) string { return b.p.ApplicationToken() },
		},
		{
			name:      "another portal",
			params:    func(_ *installBridge, o *bitrixtest.Portal) bitrixtest.InstallParams { return o.InstallParams() },
			wantCode:  403,
			wantToken: func(b *installBridge) string { return b.p.ApplicationToken() },
		},
		{
			name:      "another portal during a re-install",
			setup:     func(t *testing.T, b *installBridge) { b.startReinstall(t) },
			params:    func(_ *installBridge, o *bitrixtest.Portal) bitrixtest.InstallParams { return o.InstallParams() },
			wantCode:  200,
			wantToken: func(*installBridge) string { return newToken },
			wantOther: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newInstallBridge(t)
			other := bitrixtest.New(t, bitrixtest.Options{MemberID: "other-member", ApplicationToken: newToken})
			if tt.setup != nil {
				tt.setup(t, b)
			}
			before, _ := b.grants.Load(context.Background())
			if code := b.install(t, tt.params(b, other)); code != tt.wantCode {
				t.Fatalf("install: %d, want %d", code, tt.wantCode)
			}
			if got := b.get(t, settings.BitrixApplicationToken); got != tt.wantToken(b) {
				t.Errorf("application token %q, want %q", got, tt.wantToken(b))
			}
			wantPortal := b.p.URL
			if tt.wantOther {
				wantPortal = other.URL
			}
			if got := b.get(t, settings.BitrixPortalURL); got != wantPortal {
				t.Errorf("portal_url %q, want %q", got, wantPortal)
			}
			after, _ := b.grants.Load(context.Background())
			if changed := after.AccessToken != before.AccessToken; changed != (tt.wantCode == 200) {
				t.Errorf("grant replaced: %v", changed)
			}
			if tt.wantCode == 200 && b.s.reinstallOpen(context.Background()) {
				t.Error("the re-install window stays open after an installation")
			}
		})
	}
}

// TestReinstallWindowCloses: the window ends by itself and can be
// cancelled.
func TestReinstallWindowCloses(t *testing.T) {
	b := newInstallBridge(t)
	ctx := context.Background()
	b.startReinstall(t)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/admin/credentials/reinstall", strings.NewReader("cancel=1"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	b.s.credentialsReinstall(rec, req)
	if b.s.reinstallOpen(ctx) {
		t.Fatal("cancelled window still open")
	}
	past := []byte(`{"started":"` + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339) + `","until":"` + time.Now().Add(-reinstallWindow/2).UTC().Format(time.RFC3339) + `"}`)
	if err := b.s.settings.SetSealed(ctx, reinstallName, past); err != nil {
		t.Fatal(err)
	}
	if b.s.reinstallOpen(ctx) {
		t.Fatal("an expired window is open")
	}
}
