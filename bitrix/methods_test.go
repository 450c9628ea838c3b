package bitrix_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"wabridge/bitrix"
	"wabridge/bitrix/bitrixtest"
)

func TestRegisterUnregister(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	ctx := ctxT(t)
	err := e.client.Register(ctx, bitrix.RegisterParams{
		ID:               "wabridge",
		PlacementHandler: "https://bridge.example/bitrix/placement",
	})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := e.portal.LastRequest("imconnector.register")
	if got := bitrixtest.Str(req.Params, "NAME"); got != "WhatsApp" {
		t.Errorf("NAME = %q", got)
	}
	if got := bitrixtest.Str(req.Params, "ICON", "DATA_IMAGE"); !strings.HasPrefix(got, "data:image/svg+xml,%3Csvg") {
		t.Errorf("DATA_IMAGE = %q", got)
	}
	if got := bitrixtest.Lookup(req.Params, "NEED_SIGNATURE"); got != false {
		t.Errorf("NEED_SIGNATURE = %#v, want JSON false", got)
	}
	if got := bitrixtest.Lookup(req.Params, "CHAT_GROUP"); got != false {
		t.Errorf("CHAT_GROUP = %#v, want JSON false", got)
	}
	if got := bitrixtest.Str(req.Params, "PLACEMENT_HANDLER"); got != "https://bridge.example/bitrix/placement" {
		t.Errorf("PLACEMENT_HANDLER = %q", got)
	}
	c, ok := e.portal.Connector("wabridge")
	if !ok || c.NeedSignature || c.ChatGroup {
		t.Fatalf("connector = %+v", c)
	}
	// The data URI decodes back to an SVG.
	dec, err := url.PathUnescape(strings.TrimPrefix(bitrixtest.Str(req.Params, "ICON", "DATA_IMAGE"), "data:image/svg+xml,"))
	if err != nil || !strings.HasPrefix(dec, "<svg ") {
		t.Fatalf("icon does not decode: %v %q", err, dec)
	}

	if err := e.client.Unregister(ctx, "wabridge"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.portal.Connector("wabridge"); ok {
		t.Fatal("still registered")
	}
	// Unregistering again fails inside an HTTP 200 answer.
	err = e.client.Unregister(ctx, "wabridge")
	var ae *bitrix.APIError
	if !errors.As(err, &ae) || ae.HTTPStatus != 200 || ae.Code != "APPLICATION_UNREGISTRATION_ERROR" {
		t.Fatalf("err = %v", err)
	}
}

func TestRegisterFailureInside200IsAnError(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	e.portal.FailNext("imconnector.register", 1, bitrixtest.Failure{Body: string(readFixture(t, "bitrix_register_failed_200.json"))})
	err := e.client.Register(ctxT(t), bitrix.RegisterParams{ID: "wabridge", PlacementHandler: "https://bridge.example/p"})
	var ae *bitrix.APIError
	if !errors.As(err, &ae) || ae.HTTPStatus != 200 || ae.Code != "CONNECTOR_ID_REQUIRED" || ae.Retryable() {
		t.Fatalf("err = %v, want CONNECTOR_ID_REQUIRED at HTTP 200", err)
	}
	e.portal.FailNext("imconnector.register", 1, bitrixtest.Failure{ResultFalse: true, Code: "NO_APPLICATION_ID"})
	err = e.client.Register(ctxT(t), bitrix.RegisterParams{ID: "wabridge", PlacementHandler: "https://bridge.example/p"})
	if !errors.As(err, &ae) || ae.Code != "NO_APPLICATION_ID" || !strings.Contains(ae.Reason(), "re-install") {
		t.Fatalf("err = %v", err)
	}
}

func TestRegisterValidatesLocally(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	for _, p := range []bitrix.RegisterParams{
		{ID: "wa.bridge", PlacementHandler: "https://x/p"},
		{ID: "WaBridge", PlacementHandler: "https://x/p"},
		{ID: "wabridge"},
	} {
		if err := e.client.Register(ctxT(t), p); err == nil {
			t.Errorf("Register(%+v) succeeded", p)
		}
	}
	if e.portal.HTTPRequests() != 0 {
		t.Fatal("invalid parameters reached the portal")
	}
}

func TestActivateStatusDataSet(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	e.portal.RegisterConnector("wabridge")
	ctx := ctxT(t)

	st, err := e.client.Status(ctx, "wabridge", 7)
	if err != nil || st.Status || st.Configured {
		t.Fatalf("before activate: %+v %v", st, err)
	}
	if err := e.client.Activate(ctx, "wabridge", 7, true); err != nil {
		t.Fatal(err)
	}
	req, _ := e.portal.LastRequest("imconnector.activate")
	if bitrixtest.Str(req.Params, "ACTIVE") != "1" || bitrixtest.Str(req.Params, "LINE") != "7" || bitrixtest.Str(req.Params, "CONNECTOR") != "wabridge" {
		t.Fatalf("activate params = %v", req.Params)
	}
	st, err = e.client.Status(ctx, "wabridge", 7)
	if err != nil {
		t.Fatal(err)
	}
	if want := (bitrix.ConnectorStatus{Line: 7, Connector: "wabridge", Configured: true, Status: true}); st != want {
		t.Fatalf("status = %+v, want %+v", st, want)
	}
	data := bitrix.ConnectorData{ID: "106540352242922", URL: "https://wa.me/15550783881", URLIM: "https://wa.me/15550783881", Name: "WhatsApp +1 555 078 3881"}
	if err := e.client.ConnectorDataSet(ctx, "wabridge", 7, data); err != nil {
		t.Fatal(err)
	}
	got := e.portal.LineState("wabridge", 7).Data
	if bitrixtest.Str(got, "URL_IM") != data.URLIM || bitrixtest.Str(got, "NAME") != data.Name || bitrixtest.Str(got, "ID") != data.ID {
		t.Fatalf("DATA = %v", got)
	}
	if err := e.client.Activate(ctx, "wabridge", 7, false); err != nil {
		t.Fatal(err)
	}
	if req, _ := e.portal.LastRequest("imconnector.activate"); bitrixtest.Str(req.Params, "ACTIVE") != "0" {
		t.Fatal("deactivation must send ACTIVE=0")
	}
	if e.portal.LineState("wabridge", 7).Active {
		t.Fatal("still active")
	}
}

func TestSendMessages(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	e.portal.ActivateLine("wabridge", 7)
	ctx := ctxT(t)
	date := time.Unix(1755770400, 0)
	msgs := []bitrix.InboundMessage{
		{
			User:    bitrix.InboundUser{ID: "4915112345678", Name: "Anna", LastName: "Schmidt", Phone: "+4915112345678", Picture: "https://bridge.example/media/a.jpg"},
			Message: bitrix.InboundContent{ID: "wamid.A", Date: date, Text: "Hallo 😊", DisableCRM: true},
			Chat:    bitrix.InboundChat{ID: "4915112345678", Name: "Anna Schmidt", URL: "https://wa.me/4915112345678"},
		},
		{
			User:    bitrix.InboundUser{ID: "4915112345678", SkipPhoneValidate: true},
			Message: bitrix.InboundContent{ID: "wamid.B", Date: date, Files: []bitrix.InboundFile{{URL: "https://bridge.example/media/b.pdf", Name: "b.pdf"}}},
			Chat:    bitrix.InboundChat{ID: "4915112345678"},
		},
		{
			User:    bitrix.InboundUser{ID: "4915112345678"},
			Message: bitrix.InboundContent{ID: "wamid.C", Text: "refused"},
			Chat:    bitrix.InboundChat{ID: "4915112345678"},
		},
	}
	e.portal.FailMessage("wamid.C", "Message could not be saved")
	res, err := e.client.SendMessages(ctx, "wabridge", 7, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 {
		t.Fatalf("results = %+v", res)
	}
	for i := 0; i < 2; i++ {
		if !res[i].Success || res[i].Session == nil || res[i].Session.ChatID != 1767 || res[i].Session.ID != 323 || res[i].UserID != 585 {
			t.Errorf("result %d = %+v", i, res[i])
		}
	}
	if res[2].Success || len(res[2].Errors) != 1 || res[2].Errors[0] != "Message could not be saved" || res[2].Session != nil {
		t.Errorf("refused item = %+v, want SUCCESS false with its error", res[2])
	}

	req, _ := e.portal.LastRequest("imconnector.send.messages")
	m0 := bitrixtest.Lookup(req.Params, "MESSAGES", "0")
	checks := map[string]string{
		"user/id": "4915112345678", "user/name": "Anna", "user/last_name": "Schmidt", "user/phone": "+4915112345678",
		"user/picture/url": "https://bridge.example/media/a.jpg", "message/id": "wamid.A", "message/date": "1755770400",
		"message/text": "Hallo 😊", "message/disable_crm": "Y", "chat/id": "4915112345678", "chat/url": "https://wa.me/4915112345678",
	}
	for path, want := range checks {
		if got := bitrixtest.Str(m0, strings.Split(path, "/")...); got != want {
			t.Errorf("MESSAGES[0].%s = %q, want %q", path, got, want)
		}
	}
	m1 := bitrixtest.Lookup(req.Params, "MESSAGES", "1")
	if bitrixtest.Str(m1, "user", "skip_phone_validate") != "Y" || bitrixtest.Str(m1, "message", "files", "0", "url") != "https://bridge.example/media/b.pdf" {
		t.Errorf("MESSAGES[1] = %v", m1)
	}
	if bitrixtest.Lookup(m1, "message", "text") != nil {
		t.Error("an empty text must be left out")
	}
	sent := e.portal.SentMessages()
	if len(sent) != 2 || sent[0].MessageID != "wamid.A" || sent[1].Files[0].Name != "b.pdf" || !sent[0].DisableCRM {
		t.Fatalf("portal recorded %+v", sent)
	}
}

func TestSendMessagesResponseFixture(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	e.portal.FailNext("imconnector.send.messages", 1, bitrixtest.Failure{Body: string(readFixture(t, "bitrix_send_messages_response.json"))})
	res, err := e.client.SendMessages(ctxT(t), "wabridge", 7, []bitrix.InboundMessage{{
		User: bitrix.InboundUser{ID: "4915112345678"}, Message: bitrix.InboundContent{ID: "x", Text: "t"}, Chat: bitrix.InboundChat{ID: "4915112345678"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := bitrix.SendResult{Success: true, UserID: 585, MessageID: "wamid.HBgNNDkxNTExMjM0NTY3OBUCABIYFDNBMDFBQjEyQ0QzNEVGNTY3ODkwAA==", Session: &bitrix.Session{ID: 323, ChatID: 1767}}
	if !reflect.DeepEqual(res, []bitrix.SendResult{want}) {
		t.Fatalf("res = %+v", res)
	}
}

func TestSendMessagesErrors(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	e.portal.RegisterConnector("wabridge")
	msg := []bitrix.InboundMessage{{User: bitrix.InboundUser{ID: "1"}, Message: bitrix.InboundContent{ID: "m", Text: "t"}, Chat: bitrix.InboundChat{ID: "1"}}}
	_, err := e.client.SendMessages(ctxT(t), "wabridge", 7, msg)
	var ae *bitrix.APIError
	if !errors.As(err, &ae) || ae.Code != "NOT_ACTIVE_LINE" || ae.Retryable() {
		t.Fatalf("err = %v, want NOT_ACTIVE_LINE from the inactive line", err)
	}
	if !strings.Contains(ae.Reason(), "activate-connector") {
		t.Fatalf("reason = %q", ae.Reason())
	}
	if !strings.HasPrefix(err.Error(), "bitrix: imconnector.send.messages: NOT_ACTIVE_LINE") {
		t.Fatalf("err = %q", err)
	}
}

func TestUpdateAndDeleteMessages(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	e.portal.ActivateLine("wabridge", 7)
	ctx := ctxT(t)
	res, err := e.client.UpdateMessages(ctx, "wabridge", 7, []bitrix.InboundMessage{{
		User: bitrix.InboundUser{ID: "u1"}, Message: bitrix.InboundContent{ID: "wamid.A", Text: "edited"}, Chat: bitrix.InboundChat{ID: "c1"},
	}})
	if err != nil || len(res) != 1 || !res[0].Success {
		t.Fatalf("update: %+v %v", res, err)
	}
	if u := e.portal.UpdatedMessages(); len(u) != 1 || u[0].Text != "edited" || u[0].MessageID != "wamid.A" {
		t.Fatalf("updated = %+v", u)
	}
	res, err = e.client.DeleteMessages(ctx, "wabridge", 7, []bitrix.DeleteItem{{UserID: "u1", MessageID: "wamid.A", ChatID: "c1"}})
	if err != nil || len(res) != 1 || !res[0].Success {
		t.Fatalf("delete: %+v %v", res, err)
	}
	if d := e.portal.Deletions(); len(d) != 1 || d[0] != (bitrixtest.Deletion{Connector: "wabridge", Line: 7, UserID: "u1", MessageID: "wamid.A", ChatID: "c1"}) {
		t.Fatalf("deletions = %+v", d)
	}
}

func TestSendStatusDeliveryAndReading(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	e.portal.ActivateLine("wabridge", 7)
	ctx := ctxT(t)
	items := []bitrix.StatusItem{
		{IM: bitrix.IMRef{ChatID: 1767, MessageID: 86497}, MessageIDs: []string{"wamid.X"}, Date: time.Unix(1773759200, 0), ChatID: "4915112345678"},
		{IM: bitrix.IMRef{ChatID: 1767, MessageID: 86498}, MessageIDs: []string{"wamid.Y", "wamid.Z"}, ChatID: "4915112345678"},
	}
	if err := e.client.SendStatusDelivery(ctx, "wabridge", 7, items); err != nil {
		t.Fatal(err)
	}
	req, _ := e.portal.LastRequest("imconnector.send.status.delivery")
	if ids, ok := bitrixtest.Lookup(req.Params, "MESSAGES", "0", "message", "id").([]any); !ok || len(ids) != 1 {
		t.Fatalf("message.id = %#v, want an array even for one id", bitrixtest.Lookup(req.Params, "MESSAGES", "0", "message", "id"))
	}
	if got := bitrixtest.Str(req.Params, "MESSAGES", "0", "im", "chat_id"); got != "1767" {
		t.Fatalf("im.chat_id = %q", got)
	}
	d := e.portal.Deliveries()
	want0 := bitrixtest.StatusReport{Connector: "wabridge", Line: 7, ChatID: 1767, MessageID: 86497, ExternalIDs: []string{"wamid.X"}, Date: 1773759200, ExternalChatID: "4915112345678"}
	if len(d) != 2 || !reflect.DeepEqual(d[0], want0) || !reflect.DeepEqual(d[1].ExternalIDs, []string{"wamid.Y", "wamid.Z"}) || d[1].Date == 0 {
		t.Fatalf("deliveries = %+v", d)
	}

	if err := e.client.SendStatusReading(ctx, "wabridge", 7, items[:1]); err != nil {
		t.Fatal(err)
	}
	req, _ = e.portal.LastRequest("imconnector.send.status.reading")
	if bitrixtest.Lookup(req.Params, "MESSAGES", "0", "message", "date") != nil {
		t.Fatal("reading carries no date")
	}
	if r := e.portal.Readings(); len(r) != 1 || r[0].MessageID != 86497 {
		t.Fatalf("readings = %+v", r)
	}
}

func TestEvents(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	ctx := ctxT(t)
	b := bitrix.EventBinding{Event: "OnImConnectorMessageAdd", Handler: "https://bridge.example/bitrix/events"}
	if err := e.client.EventBind(ctx, b); err != nil {
		t.Fatal(err)
	}
	// Binding again is not an error.
	if err := e.client.EventBind(ctx, b); err != nil {
		t.Fatalf("second bind: %v", err)
	}
	if n := e.portal.Calls("event.bind"); n != 2 {
		t.Fatalf("event.bind calls = %d", n)
	}
	req, _ := e.portal.LastRequest("event.bind")
	if bitrixtest.Str(req.Params, "event") != "OnImConnectorMessageAdd" || bitrixtest.Str(req.Params, "handler") != b.Handler {
		t.Fatalf("params = %v", req.Params)
	}
	got, err := e.client.EventGet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []bitrix.BoundEvent{{Event: "ONIMCONNECTORMESSAGEADD", Handler: b.Handler}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("EventGet = %+v", got)
	}
	n, err := e.client.EventUnbind(ctx, b)
	if err != nil || n != 1 {
		t.Fatalf("unbind: %d %v", n, err)
	}
	if len(e.portal.Bindings()) != 0 {
		t.Fatal("still bound")
	}
	err = e.client.EventBind(ctx, bitrix.EventBinding{Event: "NoSuchEvent", Handler: b.Handler})
	var ae *bitrix.APIError
	if !errors.As(err, &ae) || ae.Code != "ERROR_EVENT_NOT_FOUND" {
		t.Fatalf("err = %v", err)
	}
}

func TestDuplicateFindByComm(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	ctx := ctxT(t)
	contact := e.portal.SeedContact("+49 151 12345678")
	lead := e.portal.SeedLead("+4915112345678")

	got, err := e.client.DuplicateFindByComm(ctx, "PHONE", []string{"+4915112345678", "4915112345678"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if got["CONTACT"][0] != contact || got["LEAD"][0] != lead {
		t.Fatalf("found %v", got)
	}
	req, _ := e.portal.LastRequest("crm.duplicate.findbycomm")
	if bitrixtest.Str(req.Params, "type") != "PHONE" || bitrixtest.Str(req.Params, "values", "1") != "4915112345678" || bitrixtest.Lookup(req.Params, "entity_type") != nil {
		t.Fatalf("params = %v", req.Params)
	}
	got, err = e.client.DuplicateFindByComm(ctx, "PHONE", []string{"+4915112345678"}, "CONTACT")
	if err != nil || len(got) != 1 || len(got["CONTACT"]) != 1 {
		t.Fatalf("CONTACT only: %v %v", got, err)
	}
	// Nothing found: the portal answers [] and the client an empty map.
	got, err = e.client.DuplicateFindByComm(ctx, "PHONE", []string{"+10000000000"}, "")
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("not found: %#v %v", got, err)
	}
	if _, err := e.client.DuplicateFindByComm(ctx, "PHONE", make([]string, 21), ""); err == nil {
		t.Fatal("21 values accepted")
	}
}

func TestLeadAdd(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	yes := true
	id, err := e.client.LeadAdd(ctxT(t), bitrix.Lead{
		Title: "WhatsApp: Anna Schmidt", Name: "Anna", LastName: "Schmidt",
		Phone: []bitrix.Multifield{{Value: "+4915112345678", ValueType: "MOBILE"}}, SourceID: "OTHER", Opened: &yes,
		Extra: map[string]any{"UF_CRM_WA": "4915112345678"},
	})
	if err != nil || id <= 0 {
		t.Fatalf("id=%d err=%v", id, err)
	}
	leads := e.portal.Leads()
	if len(leads) != 1 || leads[0].ID != id {
		t.Fatalf("leads = %+v", leads)
	}
	f := leads[0].Fields
	for path, want := range map[string]string{"TITLE": "WhatsApp: Anna Schmidt", "PHONE/0/VALUE": "+4915112345678", "PHONE/0/VALUE_TYPE": "MOBILE", "OPENED": "Y", "UF_CRM_WA": "4915112345678", "SOURCE_ID": "OTHER"} {
		if got := bitrixtest.Str(f, strings.Split(path, "/")...); got != want {
			t.Errorf("fields.%s = %q, want %q", path, got, want)
		}
	}
	req, _ := e.portal.LastRequest("crm.lead.add")
	if bitrixtest.Str(req.Params, "params", "REGISTER_SONET_EVENT") != "Y" {
		t.Error("REGISTER_SONET_EVENT not sent")
	}
	// The new lead is now found by phone.
	d, _ := e.client.DuplicateFindByComm(ctxT(t), "PHONE", []string{"+4915112345678"}, "LEAD")
	if len(d["LEAD"]) != 1 || d["LEAD"][0] != id {
		t.Fatalf("duplicates = %v", d)
	}
}

// TestCRMBatchCommands: lookups and lead.add as batch commands send what
// the direct calls send, read their results the same way, and a command
// the portal refuses fails alone.
func TestCRMBatchCommands(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{RatePerSec: 2, Burst: 1}, nil)
	ctx := ctxT(t)
	contact := e.portal.SeedContact("+4915100000001")
	e.portal.FailNext("crm.lead.add", 1, bitrixtest.Failure{Status: 503, Code: "INTERNAL_SERVER_ERROR", Description: "down"})
	yes := true
	var cmds []bitrix.BatchCmd
	for i, phone := range []string{"+4915100000001", "+4915100000002", "+4915100000003"} {
		cmd, err := bitrix.DuplicateFindByCommCmd(fmt.Sprint("find", i), "PHONE", []string{phone, phone[1:]}, "")
		if err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for i, phone := range []string{"+4915100000002", "+4915100000003"} {
		cmds = append(cmds, bitrix.LeadAddCmd(fmt.Sprint("add", i), bitrix.Lead{
			Title: "WhatsApp: " + phone, Phone: []bitrix.Multifield{{Value: phone, ValueType: "MOBILE"}}, StatusID: "NEW", Opened: &yes,
		}))
	}
	res, err := e.client.Batch(ctx, cmds, false)
	if err != nil {
		t.Fatal(err)
	}
	// One request against a bucket that holds one.
	if e.portal.HTTPRequests() != 1 || e.portal.Limited() != 0 {
		t.Fatalf("requests %d, refused %d; want 1 and 0", e.portal.HTTPRequests(), e.portal.Limited())
	}
	if d, err := res.Duplicates("find0"); err != nil || len(d["CONTACT"]) == 0 || d["CONTACT"][0] != contact {
		t.Fatalf("find0 = %v, %v; want CONTACT %d", d, err, contact)
	}
	if d, err := res.Duplicates("find1"); err != nil || d == nil || len(d) != 0 {
		t.Fatalf("find1 = %#v, %v; want an empty map", d, err)
	}
	// The first lead.add was refused, alone, with a retryable error.
	if _, err := res.LeadID("add0"); !bitrix.IsRetryable(err) || !strings.Contains(err.Error(), "INTERNAL_SERVER_ERROR") {
		t.Fatalf("add0: %v, want the refusal", err)
	}
	id, err := res.LeadID("add1")
	if err != nil || id <= 0 {
		t.Fatalf("add1 = %d, %v", id, err)
	}
	leads := e.portal.Leads()
	if len(leads) != 1 || leads[0].ID != id || bitrixtest.Str(leads[0].Fields, "PHONE", "0", "VALUE") != "+4915100000003" ||
		bitrixtest.Str(leads[0].Fields, "OPENED") != "Y" || bitrixtest.Str(leads[0].Fields, "STATUS_ID") != "NEW" {
		t.Fatalf("leads = %+v", leads)
	}
	req, _ := e.portal.LastRequest("crm.lead.add")
	if !req.Batched || bitrixtest.Str(req.Params, "params", "REGISTER_SONET_EVENT") != "Y" {
		t.Errorf("batched lead.add params = %v", req.Params)
	}
	if _, err := bitrix.DuplicateFindByCommCmd("x", "PHONE", make([]string, 21), ""); err == nil {
		t.Error("21 values accepted")
	}
}

func TestIMMessageAdd(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	ctx := ctxT(t)
	id, err := e.client.IMMessageAdd(ctx, "chat1767", "[b]WhatsApp:[/b] message not delivered", true)
	if err != nil || id <= 0 {
		t.Fatalf("id=%d err=%v", id, err)
	}
	notes := e.portal.Notes()
	if len(notes) != 1 || notes[0] != (bitrixtest.Note{ID: id, DialogID: "chat1767", Message: "[b]WhatsApp:[/b] message not delivered", System: true}) {
		t.Fatalf("notes = %+v", notes)
	}
	e.portal.DenyNotes("ACCESS_ERROR")
	_, err = e.client.IMMessageAdd(ctx, "chat1767", "x", true)
	var ae *bitrix.APIError
	if !errors.As(err, &ae) || ae.Code != "ACCESS_ERROR" || ae.Retryable() || !strings.Contains(ae.Reason(), "webhook_url") {
		t.Fatalf("err = %v", err)
	}
}

func TestOpenLinesConfigGet(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	e.portal.SetOpenLine(7, map[string]any{"LINE_NAME": "WhatsApp", "ACTIVE": "Y", "CRM": "Y", "CRM_CREATE": "lead", "CRM_CHAT_TRACKER": "N", "CRM_SOURCE": "create"})
	ctx := ctxT(t)
	cfg, err := e.client.OpenLinesConfigGet(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ID != 7 || cfg.Name != "WhatsApp" || !cfg.Active || !cfg.CRM || cfg.CRMCreate != "lead" || cfg.CRMChatTracker || cfg.CRMSource != "create" || cfg.Raw["LINE_NAME"] != "WhatsApp" {
		t.Fatalf("cfg = %+v", cfg)
	}
	if req, _ := e.portal.LastRequest("imopenlines.config.get"); bitrixtest.Str(req.Params, "CONFIG_ID") != "7" {
		t.Fatalf("params = %v", req.Params)
	}
	if _, err := e.client.OpenLinesConfigGet(ctx, 99); !errors.Is(err, bitrix.ErrLineNotFound) {
		t.Fatalf("err = %v, want ErrLineNotFound", err)
	}
}

func TestBatch(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	e.portal.ActivateLine("wabridge", 7)
	e.portal.SeedContact("+4915112345678")
	ctx := ctxT(t)
	cmds := []bitrix.BatchCmd{
		{Key: "status", Method: "imconnector.status", Params: map[string]any{"CONNECTOR": "wabridge", "LINE": 7}},
		{Key: "dup", Method: "crm.duplicate.findbycomm", Params: map[string]any{"type": "PHONE", "values": []string{"+4915112345678"}}},
		{Key: "lead", Method: "crm.lead.add", Params: map[string]any{"fields": map[string]any{"TITLE": "Anna & Co", "PHONE": []map[string]string{{"VALUE": "+49 151", "VALUE_TYPE": "MOBILE"}}}}},
		{Key: "bad", Method: "imconnector.status", Params: map[string]any{"CONNECTOR": "nope", "LINE": 7}},
	}
	res, err := e.client.Batch(ctx, cmds, false)
	if err != nil {
		t.Fatal(err)
	}
	if e.portal.HTTPRequests() != 1 || e.portal.Calls("imconnector.status") != 2 {
		t.Fatalf("requests=%d status calls=%d", e.portal.HTTPRequests(), e.portal.Calls("imconnector.status"))
	}
	var st struct {
		Status bool `json:"STATUS"`
	}
	if err := res.Decode("status", &st); err != nil || !st.Status {
		t.Fatalf("status: %+v %v", st, err)
	}
	var dup map[string][]int64
	if err := res.Decode("dup", &dup); err != nil || len(dup["CONTACT"]) != 1 {
		t.Fatalf("dup: %v %v", dup, err)
	}
	leads := e.portal.Leads()
	if len(leads) != 1 || bitrixtest.Str(leads[0].Fields, "TITLE") != "Anna & Co" || bitrixtest.Str(leads[0].Fields, "PHONE", "0", "VALUE") != "+49 151" {
		t.Fatalf("leads = %+v", leads)
	}
	if err := res.Decode("bad", &st); err == nil {
		t.Fatal("bad command decoded")
	}
	if ae := res.Errors["bad"]; ae == nil || ae.Code != "IMCONNECTOR_NO_CORRECT_PROVIDER" || ae.Method != "imconnector.status" {
		t.Fatalf("errors = %+v", res.Errors)
	}
	// The commands reached the portal in order, as method?query strings.
	var order []string
	for _, r := range e.portal.Requests("") {
		if r.Batched {
			order = append(order, r.Method)
		}
	}
	if want := []string{"imconnector.status", "crm.duplicate.findbycomm", "crm.lead.add", "imconnector.status"}; !reflect.DeepEqual(order, want) {
		t.Fatalf("order = %v", order)
	}
}

func TestBatchHaltAndLimits(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	ctx := ctxT(t)
	cmds := []bitrix.BatchCmd{
		{Method: "imconnector.status", Params: map[string]any{"CONNECTOR": "nope", "LINE": 1}},
		{Method: "imconnector.list"},
	}
	res, err := e.client.Batch(ctx, cmds, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Errors) != 1 || res.Errors["0"] == nil || len(res.Results) != 0 {
		t.Fatalf("halted batch = %+v", res)
	}
	if e.portal.Calls("imconnector.list") != 0 {
		t.Fatal("halt did not stop the batch")
	}
	if _, err := e.client.Batch(ctx, make([]bitrix.BatchCmd, 51), false); err == nil {
		t.Fatal("51 commands accepted")
	}
	if _, err := e.client.Batch(ctx, []bitrix.BatchCmd{{Key: "a", Method: "x"}, {Key: "a", Method: "y"}}, false); err == nil {
		t.Fatal("duplicate keys accepted")
	}
	if _, err := e.client.Batch(ctx, []bitrix.BatchCmd{{Method: "batch"}}, false); err == nil {
		t.Fatal("nested batch accepted")
	}
	if e.portal.HTTPRequests() != 1 {
		t.Fatalf("requests = %d: refused batches must not reach the portal", e.portal.HTTPRequests())
	}
}

func TestEncodeQuery(t *testing.T) {
	got, err := bitrix.EncodeQuery(map[string]any{
		"fields": map[string]any{"TITLE": "Anna & Co", "PHONE": []map[string]string{{"VALUE": "+49 151"}}, "OPENED": true, "X": nil, "E": []string{}},
		"ID":     7,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "ID=7&fields%5BOPENED%5D=1&fields%5BPHONE%5D%5B0%5D%5BVALUE%5D=%2B49+151&fields%5BTITLE%5D=Anna+%26+Co"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// It round-trips through ParseForm.
	f, err := bitrix.ParseForm([]byte(got))
	if err != nil || f.String("fields", "PHONE", "0", "VALUE") != "+49 151" || f.String("fields", "TITLE") != "Anna & Co" {
		t.Fatalf("round trip: %v %v", f, err)
	}
	if _, err := bitrix.EncodeQuery([]int{1}); err == nil {
		t.Fatal("a list accepted as params")
	}
}

func TestInboundMessageJSON(t *testing.T) {
	m := bitrix.InboundMessage{
		User:    bitrix.InboundUser{ID: "1"},
		Message: bitrix.InboundContent{ID: "m", Text: "x"},
		Chat:    bitrix.InboundChat{ID: "1"},
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"chat":{"id":"1"},"message":{"id":"m","text":"x"},"user":{"id":"1"}}` {
		t.Fatalf("json = %s", b)
	}
}

func TestAppInfo(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	ctx := ctxT(t)
	info, err := e.client.AppInfo(ctx)
	if err != nil || info.Code != e.portal.ClientID() || !info.Installed {
		t.Fatalf("AppInfo = %+v, %v", info, err)
	}
	// With a token from elsewhere (an install POST): genuine and forged.
	g := e.portal.Grant()
	info, err = e.client.AppInfoAs(ctx, g.ClientEndpoint, g.AccessToken)
	if err != nil || info.Code != e.portal.ClientID() {
		t.Fatalf("AppInfoAs = %+v, %v", info, err)
	}
	if _, err := e.client.AppInfoAs(ctx, g.ClientEndpoint, "forged-token"); err == nil {
		t.Fatal("a forged token was accepted")
	}
}

func TestIsAdminAs(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	ctx := ctxT(t)
	admin, user := e.portal.EventAuth(1), e.portal.EventAuth(27)
	e.portal.DenyAdmin(user.AccessToken)
	if ok, err := e.client.IsAdminAs(ctx, e.portal.RESTURL(), admin.AccessToken); err != nil || !ok {
		t.Fatalf("administrator: %v, %v", ok, err)
	}
	if ok, err := e.client.IsAdminAs(ctx, e.portal.RESTURL(), user.AccessToken); err != nil || ok {
		t.Fatalf("plain user: %v, %v", ok, err)
	}
	if _, err := e.client.IsAdminAs(ctx, e.portal.RESTURL(), "forged-token"); err == nil {
		t.Fatal("a forged token was answered")
	}
}
