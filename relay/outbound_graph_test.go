package relay_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"wabridge/whatsapp/whatsapptest"
)

// productionSchedule is relay.retry_schedule's default: a failure left to
// the schedule costs at least its first wait.
const productionSchedule = "10s,30s,60s,5m,15m"

// TestOutboundGraphBlipCostsSeconds: Graph answers an operator's reply
// three times in a row with HTTP 500 (codes 1 and 2). The Graph client
// retries in the call, so the reply reaches WhatsApp once, within
// seconds, before the schedule's first wait of 10 s would even have
// ended: no attempt is counted and the message is never rescheduled.
func TestOutboundGraphBlipCostsSeconds(t *testing.T) {
	e := newEnv(t, envOptions{schedule: productionSchedule})
	chat := e.openChat()
	e.wa.FailNext(whatsapptest.RouteSend, 1, whatsapptest.FailUnknown)
	e.wa.FailNext(whatsapptest.RouteSend, 2, whatsapptest.FailUnavailable)
	start := time.Now()
	e.postBitrix(e.messageAdd(e.reply(chat, 9500, "sorry for the wait")))
	e.waitOutState(9500, "sent")
	elapsed := time.Since(start)
	t.Logf("through three HTTP 500 answers the reply reached WhatsApp %.2f s after it arrived", elapsed.Seconds())

	if texts := e.graphTexts(e.b.CustomerWaID); !slices.Equal(texts, []string{"sorry for the wait"}) {
		t.Errorf("customer got %q, want the reply once", texts)
	}
	if n := e.wa.Calls(whatsapptest.RouteSend); n != 4 {
		t.Errorf("%d send calls, want 4: three failures and the success", n)
	}
	if a := e.queryInt(`SELECT attempts FROM messages WHERE bitrix_message_id = 9500`); a != 0 {
		t.Errorf("attempts = %d: the message went through the schedule, not the in-call retries", a)
	}
	if st := e.r.Stats(); st.OutRetried != 0 || st.OutDead != 0 {
		t.Errorf("stats %+v: the message was rescheduled", st)
	}
	if elapsed >= 10*time.Second {
		t.Errorf("the reply took %v, no less than the schedule's first wait", elapsed)
	}
	e.waitFor("the operator's tick", func() bool {
		return e.queryInt(`SELECT count(*) FROM status_reports s JOIN messages m ON m.id = s.message_id
			WHERE m.bitrix_message_id = 9500 AND s.kind = 'delivered' AND s.state = 'sent'`) == 1
	})
}

// TestOutboundGraphOutageUsesSchedule: an outage longer than the client's
// in-call retries falls back to the schedule: one attempt counted, and the
// reply still goes out once.
func TestOutboundGraphOutageUsesSchedule(t *testing.T) {
	e := newEnv(t, envOptions{schedule: "10ms,20ms,40ms"})
	chat := e.openChat()
	e.wa.FailNext(whatsapptest.RouteSend, 6, whatsapptest.FailUnavailable)
	e.postBitrix(e.messageAdd(e.reply(chat, 9510, "still there?")))
	e.waitOutState(9510, "sent")
	if texts := e.graphTexts(e.b.CustomerWaID); !slices.Equal(texts, []string{"still there?"}) {
		t.Errorf("customer got %q, want the reply once", texts)
	}
	// The first attempt: the try and three retries; the second: two
	// failures and the success.
	if n := e.wa.Calls(whatsapptest.RouteSend); n != 7 {
		t.Errorf("%d send calls, want 7", n)
	}
	if a := e.queryInt(`SELECT attempts FROM messages WHERE bitrix_message_id = 9510`); a != 1 {
		t.Errorf("attempts = %d, want 1", a)
	}
}

// TestOutboundReengagementOneCall: 131047 (the customer's 24-hour window
// is closed) is final, also when Meta answers it with HTTP 500: exactly
// one call to Graph, and the message is a dead letter at once.
func TestOutboundReengagementOneCall(t *testing.T) {
	for name, f := range map[string]whatsapptest.Failure{
		"HTTP 400": whatsapptest.FailReengagement,
		"HTTP 500": {Status: http.StatusInternalServerError, Code: 131047, Message: "(#131047) Re-engagement message"},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOptions{schedule: productionSchedule})
			chat := e.openChat()
			e.wa.FailNext(whatsapptest.RouteSend, 1, f)
			e.postBitrix(e.messageAdd(e.reply(chat, 9520, "are you still interested?")))
			e.waitDead()
			e.waitOutState(9520, "dead")
			if n := e.wa.Calls(whatsapptest.RouteSend); n != 1 {
				t.Errorf("%d send calls, want exactly 1", n)
			}
			if n := len(e.wa.Sent()); n != 0 {
				t.Errorf("%d messages reached WhatsApp", n)
			}
		})
	}
}
