package bitrix_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"wabridge/bitrix"
	"wabridge/bitrix/bitrixtest"
)

// memStore is an in-memory GrantStore that counts saves.
type memStore struct {
	mu    sync.Mutex
	g     bitrix.Grant
	has   bool
	saves int
	fail  error
}

func (s *memStore) Load(context.Context) (bitrix.Grant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.has {
		return bitrix.Grant{}, bitrix.ErrNoGrant
	}
	return s.g, nil
}

func (s *memStore) Save(_ context.Context, g bitrix.Grant) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.g, s.has = g, true
	s.saves++
	return nil
}

func (s *memStore) get() (bitrix.Grant, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.g, s.saves
}

// testWriter sends log lines to t.Log until the test ends.
type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}

func testLogger(t testing.TB) (*slog.Logger, *testWriter) {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), w
}

// env is a client wired to a fake portal with a stored grant.
type env struct {
	portal *bitrixtest.Portal
	store  *memStore
	client *bitrix.Client
}

// newEnv starts a portal and a client with a fast back-off; mod may adjust
// the client's options.
func newEnv(t *testing.T, popts bitrixtest.Options, mod func(*bitrix.Options)) *env {
	t.Helper()
	p := bitrixtest.New(t, popts)
	st := &memStore{g: p.Grant(), has: true}
	log, _ := testLogger(t)
	o := bitrix.Options{
		ClientID:     bitrix.Static(p.ClientID()),
		ClientSecret: bitrix.Static(p.ClientSecret()),
		OAuthURL:     bitrix.Static(p.OAuthURL()),
		Grants:       st,
		RatePerSec:   1000,
		Burst:        1000,
		RetryBase:    time.Millisecond,
		RetryMax:     5 * time.Millisecond,
		HTTPClient:   p.Client(),
		Logger:       log,
	}
	if mod != nil {
		mod(&o)
	}
	return &env{portal: p, store: st, client: bitrix.New(o)}
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
