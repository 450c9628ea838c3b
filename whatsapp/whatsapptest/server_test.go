package whatsapptest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"wabridge/whatsapp/whatsapptest"
)

// post sends a raw request the way a client would, so the fake's own
// validation is checked independently of package whatsapp.
func post(t *testing.T, url, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("answer is not JSON: %s", raw)
	}
	return resp.StatusCode, out
}

func errorCode(out map[string]any) float64 {
	e, _ := out["error"].(map[string]any)
	code, _ := e["code"].(float64)
	return code
}

func TestServerValidatesLikeGraph(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	messages := srv.BaseURL() + "/" + whatsapptest.DefaultPhoneNumberID + "/messages"
	tests := []struct {
		name   string
		url    string
		token  string
		body   string
		status int
		code   float64
	}{
		{"no token", messages, "", `{}`, 401, 104},
		{"wrong token", messages, "nope", `{}`, 401, 190},
		{"not JSON", messages, srv.Token(), `{`, 400, 100},
		{"no messaging_product", messages, srv.Token(), `{"to":"1","type":"text","text":{"body":"x"}}`, 400, 100},
		{"no recipient", messages, srv.Token(), `{"messaging_product":"whatsapp","type":"text","text":{"body":"x"}}`, 400, 100},
		{"type without body", messages, srv.Token(), `{"messaging_product":"whatsapp","to":"1","type":"image"}`, 400, 100},
		{"unknown phone number", srv.BaseURL() + "/123/messages", srv.Token(), `{"messaging_product":"whatsapp","to":"1","type":"text","text":{"body":"x"}}`, 400, 100},
		{"unknown path", srv.BaseURL() + "/a/b/c", srv.Token(), `{}`, 400, 2500},
		{"accepted", messages, srv.Token(), `{"messaging_product":"whatsapp","to":"+49 151 1","type":"text","text":{"body":"x"}}`, 200, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out := post(t, tt.url, tt.token, tt.body)
			if status != tt.status || errorCode(out) != tt.code {
				t.Errorf("status %d code %v, want %d %v: %v", status, errorCode(out), tt.status, tt.code, out)
			}
		})
	}
	sent := srv.Sent()
	if len(sent) != 1 || sent[0].To != "+49 151 1" {
		t.Fatalf("sent = %+v", sent)
	}
	_, out := post(t, messages, srv.Token(), `{"messaging_product":"whatsapp","to":"+49 151 1","type":"text","text":{"body":"x"}}`)
	contacts := out["contacts"].([]any)
	if wa := contacts[0].(map[string]any)["wa_id"]; wa != "491511" {
		t.Errorf("wa_id = %v", wa)
	}
}

func TestFailuresQueueInOrder(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	messages := srv.BaseURL() + "/" + whatsapptest.DefaultPhoneNumberID + "/messages"
	srv.FailNext(whatsapptest.RouteSend, 1, whatsapptest.FailThroughput)
	srv.FailNext(whatsapptest.RouteSend, 2, whatsapptest.FailInternal)
	body := `{"messaging_product":"whatsapp","to":"1","type":"text","text":{"body":"x"}}`
	want := []float64{130429, 131000, 131000, 0}
	for i, code := range want {
		if _, out := post(t, messages, srv.Token(), body); errorCode(out) != code {
			t.Errorf("call %d: code %v, want %v", i, errorCode(out), code)
		}
	}
	// A failure injected for one route leaves the others alone.
	srv.FailNext(whatsapptest.RouteMarkRead, 1, whatsapptest.FailInternal)
	if _, out := post(t, messages, srv.Token(), body); errorCode(out) != 0 {
		t.Errorf("send hit the mark-read failure: %v", out)
	}
	if _, out := post(t, messages, srv.Token(), `{"messaging_product":"whatsapp","status":"read","message_id":"wamid.X"}`); errorCode(out) != 131000 {
		t.Errorf("mark read: %v", out)
	}
	if srv.Calls(whatsapptest.RouteSend) != 5 || srv.Calls(whatsapptest.RouteMarkRead) != 1 || len(srv.Sent()) != 2 {
		t.Errorf("calls send %d read %d sent %d", srv.Calls(whatsapptest.RouteSend), srv.Calls(whatsapptest.RouteMarkRead), len(srv.Sent()))
	}
}
