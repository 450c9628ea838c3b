package bitrix_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"wabridge/bitrix"
	"wabridge/bitrix/bitrixtest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestLimiterHoldsRateOverSimulatedMinute(t *testing.T) {
	tests := []struct {
		rate  float64
		burst int
	}{
		{2, 50},  // the default plan
		{5, 250}, // Enterprise
		{0.5, 1},
	}
	for _, tt := range tests {
		clock := bitrixtest.NewClock(t0)
		clock.SetAutoAdvance(true)
		l := bitrix.NewLimiter(tt.rate, tt.burst, clock)
		ctx := context.Background()

		// Call as fast as the limiter lets us; record when each call passes.
		var at []time.Duration
		for {
			if err := l.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			el := clock.Now().Sub(t0)
			if el > time.Minute {
				break
			}
			at = append(at, el)
		}
		want := tt.burst + int(tt.rate*60)
		if len(at) != want {
			t.Errorf("rate %v burst %d: %d calls in 60 s, want exactly %d", tt.rate, tt.burst, len(at), want)
		}
		// No window of any length holds more than burst + rate*window.
		for i := range at {
			for j := i; j < len(at); j++ {
				window := (at[j] - at[i]).Seconds()
				if n := j - i + 1; float64(n) > float64(tt.burst)+tt.rate*window+1e-9 {
					t.Fatalf("rate %v burst %d: %d calls within %.3f s", tt.rate, tt.burst, n, window)
				}
			}
		}
	}
}

func TestLimiterBurst(t *testing.T) {
	clock := bitrixtest.NewClock(t0)
	l := bitrix.NewLimiter(2, 50, clock)
	for i := range 50 {
		if d := l.Reserve(); d != 0 {
			t.Fatalf("call %d of the burst waits %v", i+1, d)
		}
	}
	if d := l.Reserve(); d != 500*time.Millisecond {
		t.Fatalf("51st call waits %v, want 500ms", d)
	}
	if d := l.Reserve(); d != time.Second {
		t.Fatalf("52nd call waits %v, want 1s", d)
	}
	if l.Waits() != 2 || l.Waited() != 1500*time.Millisecond {
		t.Fatalf("waits=%d waited=%v", l.Waits(), l.Waited())
	}
	// After 10 s idle (from the 52nd booking at +1 s) 20 units drained.
	clock.Advance(11 * time.Second)
	for i := range 20 {
		if d := l.Reserve(); d != 0 {
			t.Fatalf("call %d after idle waits %v", i+1, d)
		}
	}
	if d := l.Reserve(); d <= 0 {
		t.Fatal("bucket should be full again")
	}
	// A full drain (burst/rate = 25 s) restores the whole burst.
	clock.Advance(time.Minute)
	if lvl := l.Level(); lvl != 0 {
		t.Fatalf("level after a minute idle = %v", lvl)
	}
}

func TestLimiterWaitHonoursContext(t *testing.T) {
	clock := bitrixtest.NewClock(t0)
	l := bitrix.NewLimiter(1, 1, clock)
	if err := l.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Wait(ctx) }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	// The cancelled unit was given back: after 1 s there is room again.
	clock.Advance(time.Second)
	if d := l.Reserve(); d != 0 {
		t.Fatalf("after cancel and 1 s, wait %v, want 0", d)
	}
	// A fake-clock waiter is released by Advance.
	go func() { done <- l.Wait(context.Background()) }()
	time.Sleep(10 * time.Millisecond)
	clock.Advance(time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestLimiterPanicsOnBadConfig(t *testing.T) {
	for _, f := range []func(){
		func() { bitrix.NewLimiter(0, 1, nil) },
		func() { bitrix.NewLimiter(1, 0, nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			f()
		}()
	}
}

// TestClientStaysUnderPortalLimit runs the real client against a fake portal
// that enforces the same leaky bucket, at a rate high enough to keep the
// test short. The portal's tolerance of two requests (40 ms at this rate)
// stands for the network jitter between the client's clock and the
// portal's; without pacing the same load is refused many times.
func TestClientStaysUnderPortalLimit(t *testing.T) {
	const rate, burst = 50, 10
	run := func(t *testing.T, clientRate float64, clientBurst int) (*env, time.Duration, int) {
		e := newEnv(t, bitrixtest.Options{RatePerSec: rate, Burst: burst, LimitTolerance: 2}, func(o *bitrix.Options) {
			o.RatePerSec, o.Burst = clientRate, clientBurst
			o.MaxRetries = 20
		})
		e.portal.ActivateLine("wabridge", 7)
		ctx := ctxT(t)
		start := time.Now()
		var mu sync.Mutex
		failed := 0
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 8 {
					if _, err := e.client.Status(ctx, "wabridge", 7); err != nil {
						mu.Lock()
						failed++
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		return e, time.Since(start), failed
	}

	t.Run("paced", func(t *testing.T) {
		e, took, failed := run(t, rate, burst)
		if failed != 0 {
			t.Fatalf("%d calls failed", failed)
		}
		if n := e.portal.Limited(); n != 0 {
			t.Fatalf("the portal refused %d requests, want 0", n)
		}
		if n := e.portal.Calls("imconnector.status"); n != 64 {
			t.Fatalf("calls = %d", n)
		}
		// 64 calls, 10 at once, then 50/s: at least 1.08 s.
		if min := time.Duration(float64(64-burst) / rate * float64(time.Second)); took < min*9/10 {
			t.Fatalf("took %v, faster than the limit allows (%v)", took, min)
		}
		if e.client.Limiter().Waits() == 0 || e.client.Limiter().Waited() == 0 {
			t.Fatal("limiter metrics not recorded")
		}
	})
	t.Run("unpaced", func(t *testing.T) {
		e, _, _ := run(t, 100000, 100000)
		if e.portal.Limited() == 0 {
			t.Fatal("without pacing the portal should have refused requests; the comparison is void")
		}
	})
}

// TestLimiterSetRate: a new rate and burst apply from the moment they are
// set, with what the bucket holds kept; invalid values change nothing.
func TestLimiterSetRate(t *testing.T) {
	clock := bitrixtest.NewClock(t0)
	l := bitrix.NewLimiter(2, 50, clock)
	for range 50 {
		l.Reserve()
	}
	if d := l.Reserve(); d != 500*time.Millisecond {
		t.Fatalf("51st call at 2/s waits %v", d)
	}
	// An Enterprise plan: 5/s, burst 250. The bucket holds 51.
	if err := l.SetRate(5, 250); err != nil {
		t.Fatal(err)
	}
	for i := range 199 {
		if d := l.Reserve(); d != 0 {
			t.Fatalf("call %d after the upgrade waits %v", i+1, d)
		}
	}
	if d := l.Reserve(); d != 200*time.Millisecond {
		t.Fatalf("call past the new burst waits %v, want 200ms at 5/s", d)
	}
	if l.Rate() != 5 || l.Burst() != 250 {
		t.Fatalf("rate %v burst %d", l.Rate(), l.Burst())
	}
	for _, bad := range []struct {
		rate  float64
		burst int
	}{{0, 10}, {-1, 10}, {2, 0}} {
		if err := l.SetRate(bad.rate, bad.burst); err == nil {
			t.Errorf("SetRate(%v, %d) accepted", bad.rate, bad.burst)
		}
	}
	if l.Rate() != 5 || l.Burst() != 250 {
		t.Fatalf("a refused SetRate changed the limiter: rate %v burst %d", l.Rate(), l.Burst())
	}
}
