package cli

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"wabridge/bitrix"
	"wabridge/db/dbtest"
	"wabridge/secret"
	"wabridge/settings"
)

// TestRateLimitSettingAppliesWithoutRestart: a changed bitrix.rate_per_sec
// and rate_burst reach the running client's bucket at the next run of the
// bitrix_rate_limit job.
func TestRateLimitSettingAppliesWithoutRestart(t *testing.T) {
	ctx := context.Background()
	d := dbtest.New(t)
	s := settings.New(settings.Options{DB: d, Key: secret.GenerateKey(), Env: func(string) (string, bool) { return "", false }})
	portal, err := newBitrix(ctx, s, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	u := newUpkeep(s, portal, nil)
	if r, err := u.applyRateLimit(ctx); err != nil || r != "unchanged" {
		t.Fatalf("with the defaults: %q, %v", r, err)
	}
	if portal.Limiter().Rate() != bitrix.DefaultRatePerSec || portal.Limiter().Burst() != bitrix.DefaultBurst {
		t.Fatalf("start: %v/%d", portal.Limiter().Rate(), portal.Limiter().Burst())
	}
	if err := s.Set(ctx, []settings.Pair{{Name: settings.BitrixRatePerSec, Value: "5"}, {Name: settings.BitrixRateBurst, Value: "250"}}); err != nil {
		t.Fatal(err)
	}
	r, err := u.applyRateLimit(ctx)
	if err != nil || !strings.Contains(r, "5 requests per second, burst 250") {
		t.Fatalf("after the change: %q, %v", r, err)
	}
	if portal.Limiter().Rate() != 5 || portal.Limiter().Burst() != 250 {
		t.Fatalf("bucket: %v/%d", portal.Limiter().Rate(), portal.Limiter().Burst())
	}
}
