package relay

import (
	"testing"
	"time"
)

// TestPaceWait: the pump calls at full speed up to a quarter of the burst,
// or three quarters while messages wait behind the heads; above that it
// waits until the level is back, at most one drain interval.
func TestPaceWait(t *testing.T) {
	tests := []struct {
		name   string
		level  float64
		queued bool
		want   time.Duration
	}{
		{"empty bucket", 0, false, 0},
		{"at a quarter", 12.5, false, 0},
		{"above a quarter, nothing queued", 13, false, 250 * time.Millisecond},
		{"far above a quarter, nothing queued", 30, false, 500 * time.Millisecond},
		{"above a quarter, messages queued", 30, true, 0},
		{"at three quarters, messages queued", 37.5, true, 0},
		{"above three quarters, messages queued", 38, true, 250 * time.Millisecond},
		{"full bucket, messages queued", 50, true, 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := paceWait(tt.level, 2, 50, tt.queued); got != tt.want {
				t.Errorf("paceWait(%v, 2/s, 50, queued=%v) = %v, want %v", tt.level, tt.queued, got, tt.want)
			}
		})
	}
}

// TestQueuedBehind: only a conversation with more than its head waiting
// counts as queued.
func TestQueuedBehind(t *testing.T) {
	if queuedBehind([]head{{queued: 1}, {queued: 1}}) {
		t.Error("heads alone reported as queued")
	}
	if !queuedBehind([]head{{queued: 1}, {queued: 3}}) {
		t.Error("a conversation with messages behind its head not reported")
	}
	if queuedBehind(nil) {
		t.Error("no heads reported as queued")
	}
}
