package relay_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"wabridge/whatsapp/whatsapptest"
)

// accept stores body as the webhook handler does and tells the intake
// with Accepted, which is what marks a burst as ongoing.
func (e *env) accept(body []byte) {
	e.t.Helper()
	if _, err := e.store(body); err != nil {
		e.t.Errorf("accept: %v", err)
		return
	}
	e.r.Accepted("whatsapp")
}

// TestIntakeYieldsToABurstOnly: while webhooks keep arriving, the intake
// pauses between full batches so that acknowledging them comes first,
// and still processes everything, in order; a backlog with nothing new
// arriving is drained without a pause.
func TestIntakeYieldsToABurstOnly(t *testing.T) {
	e := newEnv(t, envOptions{noStart: true, quiet: true})
	const customers = 32
	var (
		mu   sync.Mutex
		want = map[string][]string{}
		n    atomic.Int64
	)
	send := func(c int) {
		i := n.Add(1)
		b := whatsapptest.NewBuilder()
		b.CustomerWaID, b.CustomerName = customer(c)
		ev := b.Text(fmt.Sprintf("message %d", i)).WithID(fmt.Sprintf("wamid.burst.%d", i))
		// Each customer writes from one goroutine, so its order is the
		// order of acceptance.
		e.accept(ev.Body())
		mu.Lock()
		want[b.CustomerWaID] = append(want[b.CustomerWaID], ev.ID())
		mu.Unlock()
	}

	// A backlog that is not growing: drained at full speed.
	for i := range 250 {
		send(i % customers)
	}
	e.start()
	e.waitFor("the backlog to be processed", e.idle)
	if y := e.r.Stats().Yields; y != 0 {
		t.Errorf("%d pauses for a backlog with nothing new arriving, want 0", y)
	}

	// A burst: customers keep writing while the intake works.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range customers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				send(c)
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.r.Stats().Yields == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	// Keep the burst going a little longer so that processing has to go
	// on between pauses.
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if e.r.Stats().Yields == 0 {
		t.Fatalf("the intake never paused during a burst of %d webhooks", n.Load())
	}
	e.waitFor("the burst to be processed and delivered", e.idle)
	total := 0
	for waID, ids := range want {
		total += len(ids)
		if got := e.chat(waID); strings.Join(got, ",") != strings.Join(ids, ",") {
			t.Errorf("customer %s: %d messages at the portal, want %d in order", waID, len(got), len(ids))
		}
	}
	st := e.r.Stats()
	t.Logf("%d webhooks, %d pauses, %d messages stored, %d delivered", total, st.Yields, st.Messages, st.Delivered)
	if st.Messages != int64(total) {
		t.Errorf("%d messages stored, want %d", st.Messages, total)
	}
}
