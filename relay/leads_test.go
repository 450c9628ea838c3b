package relay_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"wabridge/bitrix/bitrixtest"
	"wabridge/relay"
	"wabridge/whatsapp/whatsapptest"
)

func leadEnv(t *testing.T, mode string) *env {
	return newEnv(t, envOptions{leadMode: mode, settings: map[string]string{
		"crm.lead_source_id": "WEB", "crm.lead_status_id": "NEW", "crm.lead_assigned_by_id": "12",
	}})
}

// TestLeadOnceForConcurrentFirstMessages: five first messages of a new
// number arrive at the same time; the CRM gets exactly one lead.
func TestLeadOnceForConcurrentFirstMessages(t *testing.T) {
	e := leadEnv(t, "bridge")
	var wg sync.WaitGroup
	var ids []string
	for i := range 5 {
		ev := e.b.Text(fmt.Sprintf("hello %d", i))
		ids = append(ids, ev.ID())
		wg.Add(1)
		go func() { defer wg.Done(); e.post(ev.Body()) }()
	}
	wg.Wait()
	e.waitSent(ids...)
	e.waitFor("the CRM check", func() bool {
		return e.queryString(`SELECT lead_state FROM contacts WHERE wa_id = ?`, e.b.CustomerWaID) == "created"
	})
	e.waitFor("idle", e.idle)
	leads := e.portal.Leads()
	if len(leads) != 1 {
		t.Fatalf("%d leads, want 1", len(leads))
	}
	f := leads[0].Fields
	phone := "+" + e.b.CustomerWaID
	want := map[string]string{
		"TITLE": "WhatsApp: " + whatsapptest.DefaultCustomerName + " " + phone, "NAME": whatsapptest.DefaultCustomerName,
		"SOURCE_ID": "WEB", "STATUS_ID": "NEW", "ASSIGNED_BY_ID": "12", "OPENED": "Y",
	}
	for k, v := range want {
		if got := fmt.Sprint(f[k]); got != v {
			t.Errorf("lead %s = %q, want %q", k, got, v)
		}
	}
	if got := bitrixtest.Str(f, "PHONE", "0", "VALUE"); got != phone {
		t.Errorf("lead phone = %q, want %q", got, phone)
	}
	if got := bitrixtest.Str(f, "PHONE", "0", "VALUE_TYPE"); got != "MOBILE" {
		t.Errorf("lead phone type = %q, want MOBILE", got)
	}
	req, ok := e.portal.LastRequest("crm.duplicate.findbycomm")
	if !ok || bitrixtest.Str(req.Params, "values", "0") != phone || bitrixtest.Str(req.Params, "values", "1") != e.b.CustomerWaID {
		t.Errorf("findbycomm = %v, want both +E.164 and digits", req.Params)
	}
	if typ, id := e.queryString(`SELECT crm_entity_type FROM contacts`), e.queryInt(`SELECT crm_entity_id FROM contacts`); typ != "LEAD" || id != leads[0].ID {
		t.Errorf("contact remembers %s %d, want LEAD %d", typ, id, leads[0].ID)
	}
}

// TestLeadClaimIsAtomic: five lead jobs for the same new customer run at
// once; one lead.
func TestLeadClaimIsAtomic(t *testing.T) {
	e := leadEnv(t, "bridge")
	ev := e.b.Text("first")
	e.post(ev.Body())
	e.waitSent(ev.ID())
	e.waitFor("idle", e.idle)
	// A second customer, stored as waiting for its check, without a job.
	var id int64
	if err := e.d.InTx(e.ctx, func(tx *sql.Tx) error {
		return tx.QueryRow(`INSERT INTO contacts (channel_id, wa_id, phone, profile_name, lead_state, created_at, updated_at)
			SELECT channel_id, '4917000000001', '+4917000000001', 'Bea', 'new', created_at, updated_at FROM contacts LIMIT 1 RETURNING id`).Scan(&id)
	}); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(map[string]int64{"contact_id": id})
	for range 5 {
		if err := e.d.InTx(e.ctx, func(tx *sql.Tx) error {
			return e.q.Enqueue(e.ctx, tx, relay.JobLead, payload, 0)
		}); err != nil {
			t.Fatal(err)
		}
	}
	e.q.Wake()
	e.waitFor("idle", e.idle)
	if n := len(e.portal.Leads()); n != 2 {
		t.Fatalf("%d leads, want 2 (one per customer)", n)
	}
}

// TestLeadBatch: a burst of new customers is checked with batch calls, not
// two calls each.
func TestLeadBatch(t *testing.T) {
	e := leadEnv(t, "bridge")
	known := e.portal.SeedContact("+4915100000003")
	e.stop() // accept everything first, so the checks meet in one run
	var ids []string
	for c := range 30 {
		b := whatsapptest.NewBuilder()
		b.CustomerWaID, b.CustomerName = customer(c)
		ev := b.Text("hi")
		ids = append(ids, ev.ID())
		e.post(ev.Body())
	}
	e.start()
	e.waitSent(ids...)
	e.waitFor("idle", e.idle)
	if n := len(e.portal.Leads()); n != 29 {
		t.Errorf("%d leads, want 29 (one customer is a known contact)", n)
	}
	wa3, _ := customer(3)
	if typ, id := e.queryString(`SELECT crm_entity_type FROM contacts WHERE wa_id = ?`, wa3),
		e.queryInt(`SELECT crm_entity_id FROM contacts WHERE wa_id = ?`, wa3); typ != "CONTACT" || id != known {
		t.Errorf("known customer remembered as %s %d, want CONTACT %d", typ, id, known)
	}
	if n := e.queryInt(`SELECT count(*) FROM contacts WHERE lead_state NOT IN ('created', 'found')`); n != 0 {
		t.Errorf("%d customers without a finished check", n)
	}
	t.Logf("30 new customers: %d batch requests, %d crm.lead.add, %d findbycomm", e.portal.Calls("batch"),
		e.portal.Calls("crm.lead.add"), e.portal.Calls("crm.duplicate.findbycomm"))
	if n := e.portal.Calls("batch"); n > 6 {
		t.Errorf("%d batch requests for 30 customers, want a few", n)
	}
}

// TestNoLead covers the cases where the bridge creates nothing.
func TestNoLead(t *testing.T) {
	tests := []struct {
		name, mode string
		seed       func(p *bitrixtest.Portal, phone string) int64
		entity     string
		state      string
		disableCRM bool
	}{
		{name: "known contact", mode: "bridge", seed: (*bitrixtest.Portal).SeedContact, entity: "CONTACT", state: "found", disableCRM: true},
		{name: "known lead", mode: "bridge", seed: (*bitrixtest.Portal).SeedLead, entity: "LEAD", state: "found", disableCRM: true},
		{name: "line mode", mode: "line", state: "skipped", disableCRM: false},
		{name: "off mode", mode: "off", state: "skipped", disableCRM: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := leadEnv(t, tt.mode)
			var seeded int64
			if tt.seed != nil {
				seeded = tt.seed(e.portal, "+"+e.b.CustomerWaID)
			}
			ev := e.b.Text("hello")
			e.post(ev.Body())
			got := e.waitSent(ev.ID())
			e.waitFor("idle", e.idle)
			if n := len(e.portal.Leads()); n != 0 {
				t.Errorf("%d leads, want none", n)
			}
			if got.DisableCRM != tt.disableCRM {
				t.Errorf("disable_crm = %v, want %v", got.DisableCRM, tt.disableCRM)
			}
			if st := e.queryString(`SELECT lead_state FROM contacts`); st != tt.state {
				t.Errorf("lead_state = %q, want %q", st, tt.state)
			}
			if tt.entity != "" {
				if typ, id := e.queryString(`SELECT crm_entity_type FROM contacts`), e.queryInt(`SELECT crm_entity_id FROM contacts`); typ != tt.entity || id != seeded {
					t.Errorf("contact remembers %s %d, want %s %d", typ, id, tt.entity, seeded)
				}
			}
		})
	}
}

// TestLeadFailureIsDeadLetter: a CRM that refuses the check leaves a dead
// letter with the reason; retrying it creates the lead.
func TestLeadFailureIsDeadLetter(t *testing.T) {
	e := newEnv(t, envOptions{schedule: "10ms,20ms"})
	e.portal.FailNext("crm.duplicate.findbycomm", 3, bitrixtest.Failure{Status: 503, Code: "INTERNAL_SERVER_ERROR", Description: "down"})
	ev := e.b.Text("hello")
	e.post(ev.Body())
	dl := e.waitDead()
	if dl.Job != relay.JobLead {
		t.Fatalf("dead letter of %s, want %s", dl.Job, relay.JobLead)
	}
	if st := e.queryString(`SELECT lead_state FROM contacts`); st != "new" {
		t.Errorf("lead_state = %q, want new (released)", st)
	}
	if err := e.q.Retry(e.ctx, dl.ID); err != nil {
		t.Fatal(err)
	}
	e.waitFor("the lead", func() bool { return len(e.portal.Leads()) == 1 })
}

// TestLeadConflict reads the line's CRM settings.
func TestLeadConflict(t *testing.T) {
	tests := []struct {
		name string
		mode string
		line map[string]any // nil: the portal has no such line
		want bool
	}{
		{"line creates leads", "bridge", map[string]any{"CRM": "Y", "CRM_CREATE": "lead"}, true},
		{"line creates deals", "bridge", map[string]any{"CRM": "Y", "CRM_CREATE": "deal"}, true},
		{"line creates nothing", "bridge", map[string]any{"CRM": "Y", "CRM_CREATE": "none"}, false},
		{"line CRM off", "bridge", map[string]any{"CRM": "N", "CRM_CREATE": "lead"}, false},
		{"line unknown", "bridge", nil, false},
		{"line mode", "line", map[string]any{"CRM": "Y", "CRM_CREATE": "lead"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{leadMode: tt.mode, noStart: true})
			if tt.line != nil {
				e.portal.SetOpenLine(testLine, tt.line)
			}
			ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
			defer cancel()
			got, err := e.r.LeadConflict(ctx)
			if err != nil || got != tt.want {
				t.Fatalf("LeadConflict = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// TestNewCustomersBurst: 200 messages from 10 numbers the bridge has never
// seen, into a portal that allows 2 requests/s with a burst of 50. The
// portal refuses nothing for its limit, every customer gets exactly one
// lead, remembered on the customer, and all 200 messages arrive once, each
// customer's in the order sent.
func TestNewCustomersBurst(t *testing.T) {
	e := newEnv(t, envOptions{limit: true, rate: 2, burst: 50, leadMode: "bridge"})
	want := burstFromNewCustomers(e, 10, 20)
	var all []string
	for _, ids := range want {
		all = append(all, ids...)
	}
	e.waitSent(all...)
	e.waitFor("idle", e.idle)
	if n := e.portal.Limited(); n != 0 {
		t.Errorf("%d requests refused with QUERY_LIMIT_EXCEEDED, want 0", n)
	}
	if n := len(e.portal.SentMessages()); n != len(all) {
		t.Errorf("portal holds %d messages, want %d", n, len(all))
	}
	for waID, ids := range want {
		if got := e.chat(waID); strings.Join(got, ",") != strings.Join(ids, ",") {
			t.Errorf("customer %s: order %v, want %v", waID, got, ids)
		}
	}
	byPhone := map[string][]int64{}
	for _, l := range e.portal.Leads() {
		phone := bitrixtest.Str(l.Fields, "PHONE", "0", "VALUE")
		byPhone[phone] = append(byPhone[phone], l.ID)
	}
	if len(byPhone) != len(want) {
		t.Errorf("leads for %d numbers, want %d", len(byPhone), len(want))
	}
	for waID := range want {
		leads := byPhone["+"+waID]
		if len(leads) != 1 {
			t.Errorf("customer %s: %d leads, want 1", waID, len(leads))
			continue
		}
		if st, typ, id := e.queryString(`SELECT lead_state FROM contacts WHERE wa_id = ?`, waID),
			e.queryString(`SELECT crm_entity_type FROM contacts WHERE wa_id = ?`, waID),
			e.queryInt(`SELECT crm_entity_id FROM contacts WHERE wa_id = ?`, waID); st != "created" || typ != "LEAD" || id != leads[0] {
			t.Errorf("customer %s remembered as %s %s %d, want created LEAD %d", waID, st, typ, id, leads[0])
		}
	}
	t.Logf("%d HTTP requests: %d send.messages, %d batch (%d findbycomm, %d lead.add inside or alone)",
		e.portal.HTTPRequests(), e.portal.Calls("imconnector.send.messages"), e.portal.Calls("batch"),
		e.portal.Calls("crm.duplicate.findbycomm"), e.portal.Calls("crm.lead.add"))
}

// TestLeadBatchCommandFails: one customer's command inside the lead
// batches, or a whole batch, is refused. The others' checks are recorded
// from the same batch; only what failed is repeated; every customer ends
// with exactly one lead; and the messages never wait for the checks.
func TestLeadBatchCommandFails(t *testing.T) {
	down := bitrixtest.Failure{Status: 503, Code: "INTERNAL_SERVER_ERROR", Description: "down"}
	tests := []struct {
		name        string
		method      string // refused once
		finds, adds int    // commands executed in all
	}{
		{"one lookup", "crm.duplicate.findbycomm", 11, 10},
		{"one lead.add", "crm.lead.add", 11, 11},
		{"the lookup batch", "batch", 10, 10}, // a refused batch runs none of its commands
	}
	const customers = 10
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{leadMode: "bridge"})
			e.stop() // accept everything first, so the checks meet in one run
			e.portal.FailNext(tt.method, 1, down)
			var ids []string
			for c := range customers {
				b := whatsapptest.NewBuilder()
				b.CustomerWaID, b.CustomerName = customer(c)
				ev := b.Text("hi")
				ids = append(ids, ev.ID())
				e.post(ev.Body())
			}
			e.start()
			e.waitSent(ids...)
			e.waitFor("every CRM check", func() bool {
				return e.queryInt(`SELECT count(*) FROM contacts WHERE lead_state = 'created'`) == customers
			})
			e.waitFor("idle", e.idle)
			phones := map[string]int{}
			for _, l := range e.portal.Leads() {
				phones[bitrixtest.Str(l.Fields, "PHONE", "0", "VALUE")]++
			}
			for c := range customers {
				waID, _ := customer(c)
				if phones["+"+waID] != 1 {
					t.Errorf("customer %s: %d leads, want 1", waID, phones["+"+waID])
				}
			}
			if f, a := e.portal.Calls("crm.duplicate.findbycomm"), e.portal.Calls("crm.lead.add"); f != tt.finds || a != tt.adds {
				t.Errorf("%d lookups and %d lead.add executed, want %d and %d", f, a, tt.finds, tt.adds)
			}
		})
	}
}
