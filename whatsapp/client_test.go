package whatsapp_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"wabridge/whatsapp"
	"wabridge/whatsapp/whatsapptest"
)

const pnid = whatsapptest.DefaultPhoneNumberID

// newClient returns a client for srv using its current token and logging to
// the test output.
func newClient(t *testing.T, srv *whatsapptest.Server) *whatsapp.Client {
	t.Helper()
	return newClientWith(t, srv, nil)
}

// newClientWith is newClient with its options adjusted by tune.
func newClientWith(t *testing.T, srv *whatsapptest.Server, tune func(*whatsapp.Options)) *whatsapp.Client {
	t.Helper()
	opts := whatsapp.Options{
		BaseURL: srv.BaseURL(),
		Token:   whatsapp.StaticToken(srv.Token()),
		Logger:  slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if tune != nil {
		tune(&opts)
	}
	return whatsapp.New(opts)
}

// noRetries makes a client return every failure of its first try, for
// tests of how one answer is classified.
func noRetries(o *whatsapp.Options) { o.Retries = -1 }

// serveFixture starts a server answering every request with the fixture.
func serveFixture(t *testing.T, status int, name string) *httptest.Server {
	t.Helper()
	body := readFixture(t, name)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func mustAPIError(t *testing.T, err error) *whatsapp.APIError {
	t.Helper()
	var ae *whatsapp.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T) is not an *APIError", err, err)
	}
	return ae
}

func TestPhoneNumber(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	c := newClient(t, srv)
	pn, err := c.PhoneNumber(t.Context(), pnid)
	if err != nil {
		t.Fatal(err)
	}
	if pn.ID != pnid || pn.DisplayPhoneNumber != "+1 555-078-3881" || pn.VerifiedName != "Test Number" || pn.QualityRating != "GREEN" || pn.Throughput.Level != "STANDARD" {
		t.Errorf("phone number = %+v", pn)
	}
	if n := srv.Calls(whatsapptest.RoutePhoneNumber); n != 1 {
		t.Errorf("calls = %d", n)
	}

	_, err = c.PhoneNumber(t.Context(), "999")
	ae := mustAPIError(t, err)
	if ae.Code != 100 || ae.Subcode != 33 || ae.HTTPStatus != 400 || ae.Retryable() || ae.IsAuth() {
		t.Errorf("unknown node error = %+v", ae)
	}
	if !strings.HasPrefix(err.Error(), "whatsapp: phone number: graph error 100/33 (HTTP 400)") {
		t.Errorf("err = %v", err)
	}
}

func TestMediaInfoFixture(t *testing.T) {
	srv := serveFixture(t, 200, "meta_media_node.json")
	c := whatsapp.New(whatsapp.Options{BaseURL: srv.URL + "/v25.0", Token: whatsapp.StaticToken("t")})
	mi, err := c.MediaInfo(t.Context(), "1213141516171819")
	if err != nil {
		t.Fatal(err)
	}
	want := whatsapp.MediaInfo{
		ID:               "1213141516171819",
		URL:              "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1213141516171819&ext=1755770760&hash=ATtZ3kq0sEXAMPLEhashvalue",
		MIMEType:         "image/jpeg",
		SHA256:           "4231e1bc793ca7d6b566cd6afbf8b2e4b6977171782e626d6f64657071727374",
		FileSize:         183512,
		MessagingProduct: "whatsapp",
	}
	if *mi != want {
		t.Errorf("media info = %+v", mi)
	}
	var fromString whatsapp.MediaInfo
	if err := json.Unmarshal([]byte(`{"id":"1","url":"https://x","file_size":"42"}`), &fromString); err != nil || fromString.FileSize != 42 {
		t.Errorf("file_size as string: %+v, %v", fromString, err)
	}
}

func TestDownloadMedia(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	c := newClient(t, srv)
	data := bytes.Repeat([]byte("JPEGDATA"), 4096)
	id := srv.AddMedia(data, "image/jpeg")

	got, err := c.DownloadMedia(t.Context(), id, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Data, data) || got.ContentType != "image/jpeg" || got.Info.FileSize != int64(len(data)) || got.Info.ID != id {
		t.Errorf("downloaded %d bytes, type %q, info %+v", len(got.Data), got.ContentType, got.Info)
	}
	sum := sha256.Sum256(data)
	if got.Info.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("sha256 = %s", got.Info.SHA256)
	}
	if !strings.HasPrefix(got.Info.URL, srv.URL()+"/whatsapp_business/attachments/?") {
		t.Errorf("url = %s", got.Info.URL)
	}

	// The media URL is useless without the token.
	resp, err := http.Get(got.Info.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("plain GET status = %d", resp.StatusCode)
	}
	if srv.Calls(whatsapptest.RouteMediaInfo) != 1 || srv.Calls(whatsapptest.RouteMediaDownload) != 2 {
		t.Errorf("calls: info %d download %d", srv.Calls(whatsapptest.RouteMediaInfo), srv.Calls(whatsapptest.RouteMediaDownload))
	}
}

func TestDownloadRefusals(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	c := newClient(t, srv)
	data := bytes.Repeat([]byte{7}, 1000)
	id := srv.AddMedia(data, "application/pdf")
	info, err := c.MediaInfo(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}

	// A server that streams without Content-Length, and one that lies
	// about the checksum.
	chunked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range 10 {
			_, _ = w.Write(bytes.Repeat([]byte{1}, 100))
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(chunked.Close)
	chunkedClient := whatsapp.New(whatsapp.Options{BaseURL: chunked.URL + "/v25.0", Token: whatsapp.StaticToken("t")})

	tests := []struct {
		name string
		run  func() error
		want error
	}{
		{"announced size over limit", func() error { _, err := c.DownloadMedia(t.Context(), id, 999); return err }, whatsapp.ErrTooLarge},
		{"content length over limit", func() error { _, _, err := c.Download(t.Context(), info.URL, 10); return err }, whatsapp.ErrTooLarge},
		{"streamed body over limit", func() error { _, _, err := chunkedClient.Download(t.Context(), chunked.URL+"/f", 500); return err }, whatsapp.ErrTooLarge},
		{"plain http to another host", func() error { _, _, err := c.Download(t.Context(), "http://example.com/f", 0); return err }, whatsapp.ErrUnsafeURL},
		{"other scheme", func() error { _, _, err := c.Download(t.Context(), "file:///etc/passwd", 0); return err }, whatsapp.ErrUnsafeURL},
		{"relative", func() error { _, _, err := c.Download(t.Context(), "/whatsapp_business/attachments/", 0); return err }, whatsapp.ErrUnsafeURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run()
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if whatsapp.IsRetryable(err) {
				t.Error("refusal is retryable")
			}
			if !strings.HasPrefix(err.Error(), "whatsapp: download: ") {
				t.Errorf("err = %v", err)
			}
		})
	}
	// Streaming within the limit works.
	if got, _, err := chunkedClient.Download(t.Context(), chunked.URL+"/f", 1000); err != nil || len(got) != 1000 {
		t.Errorf("chunked within limit: %d bytes, %v", len(got), err)
	}
}

func TestDownloadMediaChecksumMismatch(t *testing.T) {
	var srvURL string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v25.0/77" {
			_, _ = io.WriteString(w, `{"messaging_product":"whatsapp","url":"`+srvURL+`/file","mime_type":"text/plain",
				"sha256":"0000000000000000000000000000000000000000000000000000000000000000","file_size":5,"id":"77"}`)
			return
		}
		_, _ = io.WriteString(w, "hello")
	}))
	t.Cleanup(srv.Close)
	srvURL = srv.URL
	c := whatsapp.New(whatsapp.Options{BaseURL: srv.URL + "/v25.0", Token: whatsapp.StaticToken("t")})
	_, err := c.DownloadMedia(t.Context(), "77", 0)
	if !errors.Is(err, whatsapp.ErrChecksumMismatch) || !whatsapp.IsRetryable(err) {
		t.Errorf("err = %v", err)
	}
}

func TestVerifySHA256(t *testing.T) {
	data := []byte("hello world")
	sum := sha256.Sum256(data)
	tests := []struct {
		name string
		want string
		ok   bool
	}{
		{"hex", hex.EncodeToString(sum[:]), true},
		{"upper hex", strings.ToUpper(hex.EncodeToString(sum[:])), true},
		{"base64", base64.StdEncoding.EncodeToString(sum[:]), true},
		{"base64 unpadded", base64.RawStdEncoding.EncodeToString(sum[:]), true},
		{"base64 url", base64.URLEncoding.EncodeToString(sum[:]), true},
		{"other hash", hex.EncodeToString(make([]byte, 32)), false},
		{"empty", "", false},
		{"garbage", "not a hash", false},
		{"short base64", base64.StdEncoding.EncodeToString(sum[:16]), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := whatsapp.VerifySHA256(data, tt.want)
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, whatsapp.ErrChecksumMismatch)) {
				t.Errorf("VerifySHA256(%q) = %v", tt.want, err)
			}
		})
	}
}

func TestUploadRoundTrip(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	c := newClient(t, srv)
	data := make([]byte, 300_000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	tests := []struct {
		name, filename, mime, wantName, wantMIME string
	}{
		{"pdf with umlaut", "Rechnung Müller.pdf", "application/pdf", "Rechnung Müller.pdf", "application/pdf"},
		{"path and control characters", "../../etc/a\r\nb.ogg", "audio/ogg; codecs=opus", "a__b.ogg", "audio/ogg; codecs=opus"},
		{"quote in name", `say "hi".txt`, "text/plain", `say "hi".txt`, "text/plain"},
		{"no type", "blob", "", "blob", "application/octet-stream"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := c.Upload(t.Context(), pnid, tt.filename, tt.mime, bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			ups := srv.Uploads()
			if len(ups) != i+1 {
				t.Fatalf("%d uploads recorded", len(ups))
			}
			up := ups[i]
			if up.ID != id || up.PhoneNumberID != pnid || up.Filename != tt.wantName || up.MIMEType != tt.wantMIME ||
				up.TypeField != tt.wantMIME || up.MessagingProduct != "whatsapp" || !bytes.Equal(up.Data, data) {
				t.Errorf("upload = id %q pnid %q name %q mime %q type %q product %q, %d bytes",
					up.ID, up.PhoneNumberID, up.Filename, up.MIMEType, up.TypeField, up.MessagingProduct, len(up.Data))
			}
			got, err := c.DownloadMedia(t.Context(), id, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Data, data) {
				t.Error("downloaded bytes differ from uploaded bytes")
			}
		})
	}
}

func TestUploadRejectedType(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	c := newClient(t, srv)
	_, err := c.Upload(t.Context(), pnid, "x", "not a mime type;;", strings.NewReader("x"))
	ae := mustAPIError(t, err)
	if ae.Code != 131053 || ae.Retryable() || !strings.HasPrefix(err.Error(), "whatsapp: upload: ") {
		t.Errorf("err = %v", err)
	}
}

func TestSend(t *testing.T) {
	const to = "4915112345678"
	tests := []struct {
		name string
		msg  whatsapp.OutgoingMessage
		want string
	}{
		{"text", whatsapp.OutgoingMessage{To: to, Text: &whatsapp.OutgoingText{Body: "Hallo Anna"}},
			`{"messaging_product":"whatsapp","recipient_type":"individual","to":"4915112345678","type":"text","text":{"body":"Hallo Anna","preview_url":false}}`},
		{"text with preview, reply and callback data", whatsapp.OutgoingMessage{To: to, ReplyTo: ourWamid, BizOpaqueCallbackData: "im-42",
			Text: &whatsapp.OutgoingText{Body: "Siehe https://example.com", PreviewURL: true}},
			`{"messaging_product":"whatsapp","recipient_type":"individual","to":"4915112345678","type":"text",
			  "context":{"message_id":"` + ourWamid + `"},"biz_opaque_callback_data":"im-42",
			  "text":{"body":"Siehe https://example.com","preview_url":true}}`},
		{"image by id with caption", whatsapp.OutgoingMessage{To: to, Image: &whatsapp.OutgoingMedia{ID: "111", Caption: "Foto"}},
			`{"messaging_product":"whatsapp","recipient_type":"individual","to":"4915112345678","type":"image","image":{"id":"111","caption":"Foto"}}`},
		{"image by link", whatsapp.OutgoingMessage{To: to, Image: &whatsapp.OutgoingMedia{Link: "https://bridge.example.com/media/9"}},
			`{"messaging_product":"whatsapp","recipient_type":"individual","to":"4915112345678","type":"image","image":{"link":"https://bridge.example.com/media/9"}}`},
		{"video", whatsapp.OutgoingMessage{To: to, Video: &whatsapp.OutgoingMedia{ID: "222", Caption: "Clip"}},
			`{"messaging_product":"whatsapp","recipient_type":"individual","to":"4915112345678","type":"video","video":{"id":"222","caption":"Clip"}}`},
		{"audio", whatsapp.OutgoingMessage{To: to, Audio: &whatsapp.OutgoingMedia{ID: "333"}},
			`{"messaging_product":"whatsapp","recipient_type":"individual","to":"4915112345678","type":"audio","audio":{"id":"333"}}`},
		{"document with filename", whatsapp.OutgoingMessage{To: to, Document: &whatsapp.OutgoingMedia{ID: "444", Filename: "Angebot.pdf", Caption: "Ihr Angebot"}},
			`{"messaging_product":"whatsapp","recipient_type":"individual","to":"4915112345678","type":"document","document":{"id":"444","caption":"Ihr Angebot","filename":"Angebot.pdf"}}`},
		{"sticker", whatsapp.OutgoingMessage{To: to, Sticker: &whatsapp.OutgoingMedia{ID: "555"}},
			`{"messaging_product":"whatsapp","recipient_type":"individual","to":"4915112345678","type":"sticker","sticker":{"id":"555"}}`},
		{"template", whatsapp.OutgoingMessage{To: to, Template: &whatsapp.Template{Name: "order_update", Language: "de", Components: []whatsapp.TemplateComponent{
			{Type: "header", Parameters: []whatsapp.TemplateParameter{{Type: "image", Image: &whatsapp.OutgoingMedia{Link: "https://example.com/a.jpg"}}}},
			{Type: "body", Parameters: []whatsapp.TemplateParameter{{Type: "text", Text: "Anna"}, {Type: "text", Text: "4711"}}},
			{Type: "button", SubType: "quick_reply", Index: "0", Parameters: []whatsapp.TemplateParameter{{Type: "payload", Payload: "STOP"}}},
		}}},
			`{"messaging_product":"whatsapp","recipient_type":"individual","to":"4915112345678","type":"template","template":{
			  "name":"order_update","language":{"code":"de","policy":"deterministic"},"components":[
			   {"type":"header","parameters":[{"type":"image","image":{"link":"https://example.com/a.jpg"}}]},
			   {"type":"body","parameters":[{"type":"text","text":"Anna"},{"type":"text","text":"4711"}]},
			   {"type":"button","sub_type":"quick_reply","index":"0","parameters":[{"type":"payload","payload":"STOP"}]}]}}`},
		{"template without parameters", whatsapp.OutgoingMessage{To: to, Template: &whatsapp.Template{Name: "hello_world", Language: "en_US"}},
			`{"messaging_product":"whatsapp","recipient_type":"individual","to":"4915112345678","type":"template","template":{"name":"hello_world","language":{"code":"en_US","policy":"deterministic"}}}`},
		{"reaction", whatsapp.OutgoingMessage{To: to, Reaction: &whatsapp.OutgoingReaction{MessageID: "wamid.IN", Emoji: "👍"}},
			`{"messaging_product":"whatsapp","recipient_type":"individual","to":"4915112345678","type":"reaction","reaction":{"message_id":"wamid.IN","emoji":"👍"}}`},
		{"reaction removed", whatsapp.OutgoingMessage{To: to, Reaction: &whatsapp.OutgoingReaction{MessageID: "wamid.IN"}},
			`{"messaging_product":"whatsapp","recipient_type":"individual","to":"4915112345678","type":"reaction","reaction":{"message_id":"wamid.IN","emoji":""}}`},
	}
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	c := newClient(t, srv)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wamid, err := c.Send(t.Context(), pnid, tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			sent := srv.Sent()
			if len(sent) != i+1 {
				t.Fatalf("%d messages recorded", len(sent))
			}
			rec := sent[i]
			if rec.ID != wamid || !strings.HasPrefix(wamid, "wamid.") || rec.PhoneNumberID != pnid || rec.To != to || rec.Type != tt.msg.Type() {
				t.Errorf("recorded %+v, wamid %q", rec, wamid)
			}
			assertJSONEqual(t, tt.want, rec.Body)
		})
	}
}

func assertJSONEqual(t *testing.T, want string, got []byte) {
	t.Helper()
	var w, g any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad expectation: %v", err)
	}
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("request body is not JSON: %v: %s", err, got)
	}
	if !reflect.DeepEqual(w, g) {
		t.Errorf("request body\n got: %s\nwant: %s", got, want)
	}
}

func TestSendResponseFixture(t *testing.T) {
	srv := serveFixture(t, 200, "meta_send_response.json")
	c := whatsapp.New(whatsapp.Options{BaseURL: srv.URL + "/v25.0", Token: whatsapp.StaticToken("t")})
	wamid, err := c.Send(t.Context(), pnid, whatsapp.OutgoingMessage{To: "+4915112345678", Text: &whatsapp.OutgoingText{Body: "x"}})
	if err != nil || wamid != ourWamid {
		t.Errorf("Send = %q, %v", wamid, err)
	}
}

func TestSendInvalid(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	c := newClient(t, srv)
	text := &whatsapp.OutgoingText{Body: "x"}
	tests := []struct {
		name string
		pnid string
		msg  whatsapp.OutgoingMessage
		want error
	}{
		{"no recipient", pnid, whatsapp.OutgoingMessage{Text: text}, whatsapp.ErrInvalidMessage},
		{"no kind", pnid, whatsapp.OutgoingMessage{To: "1"}, whatsapp.ErrInvalidMessage},
		{"two kinds", pnid, whatsapp.OutgoingMessage{To: "1", Text: text, Image: &whatsapp.OutgoingMedia{ID: "1"}}, whatsapp.ErrInvalidMessage},
		{"empty text", pnid, whatsapp.OutgoingMessage{To: "1", Text: &whatsapp.OutgoingText{}}, whatsapp.ErrInvalidMessage},
		{"media without id or link", pnid, whatsapp.OutgoingMessage{To: "1", Image: &whatsapp.OutgoingMedia{Caption: "c"}}, whatsapp.ErrInvalidMessage},
		{"media with id and link", pnid, whatsapp.OutgoingMessage{To: "1", Video: &whatsapp.OutgoingMedia{ID: "1", Link: "https://x"}}, whatsapp.ErrInvalidMessage},
		{"caption on audio", pnid, whatsapp.OutgoingMessage{To: "1", Audio: &whatsapp.OutgoingMedia{ID: "1", Caption: "c"}}, whatsapp.ErrInvalidMessage},
		{"caption on sticker", pnid, whatsapp.OutgoingMessage{To: "1", Sticker: &whatsapp.OutgoingMedia{ID: "1", Caption: "c"}}, whatsapp.ErrInvalidMessage},
		{"filename on image", pnid, whatsapp.OutgoingMessage{To: "1", Image: &whatsapp.OutgoingMedia{ID: "1", Filename: "a.jpg"}}, whatsapp.ErrInvalidMessage},
		{"template without language", pnid, whatsapp.OutgoingMessage{To: "1", Template: &whatsapp.Template{Name: "t"}}, whatsapp.ErrInvalidMessage},
		{"reaction without target", pnid, whatsapp.OutgoingMessage{To: "1", Reaction: &whatsapp.OutgoingReaction{Emoji: "👍"}}, whatsapp.ErrInvalidMessage},
		{"path in phone number id", "../me", whatsapp.OutgoingMessage{To: "1", Text: text}, whatsapp.ErrInvalidID},
		{"empty phone number id", "", whatsapp.OutgoingMessage{To: "1", Text: text}, whatsapp.ErrInvalidID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Send(t.Context(), tt.pnid, tt.msg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if whatsapp.IsRetryable(err) {
				t.Error("validation error is retryable")
			}
			if !strings.HasPrefix(err.Error(), "whatsapp: send: ") {
				t.Errorf("err = %v", err)
			}
		})
	}
	if n := srv.Calls(whatsapptest.RouteSend); n != 0 {
		t.Errorf("%d requests made for invalid messages", n)
	}
}

func TestMarkRead(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	c := newClient(t, srv)
	if err := c.MarkRead(t.Context(), pnid, "wamid.IN1"); err != nil {
		t.Fatal(err)
	}
	if err := c.ShowTyping(t.Context(), pnid, "wamid.IN2"); err != nil {
		t.Fatal(err)
	}
	reads := srv.Reads()
	if len(reads) != 2 || reads[0].MessageID != "wamid.IN1" || reads[0].Typing || reads[1].MessageID != "wamid.IN2" || !reads[1].Typing {
		t.Fatalf("reads = %+v", reads)
	}
	assertJSONEqual(t, `{"messaging_product":"whatsapp","status":"read","message_id":"wamid.IN1"}`, reads[0].Body)
	assertJSONEqual(t, `{"messaging_product":"whatsapp","status":"read","message_id":"wamid.IN2","typing_indicator":{"type":"text"}}`, reads[1].Body)
	if srv.Calls(whatsapptest.RouteMarkRead) != 2 || srv.Calls(whatsapptest.RouteSend) != 0 {
		t.Errorf("calls: read %d send %d", srv.Calls(whatsapptest.RouteMarkRead), srv.Calls(whatsapptest.RouteSend))
	}
	if err := c.MarkRead(t.Context(), pnid, ""); !errors.Is(err, whatsapp.ErrInvalidMessage) || !strings.HasPrefix(err.Error(), "whatsapp: mark read: ") {
		t.Errorf("empty wamid: %v", err)
	}
}

func TestExpiredTokenAndRotation(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	var mu sync.Mutex
	current := srv.Token()
	c := whatsapp.New(whatsapp.Options{
		BaseURL: srv.BaseURL(),
		Token: func(context.Context) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			return current, nil
		},
	})
	srv.ExpireToken()
	_, err := c.PhoneNumber(t.Context(), pnid)
	ae := mustAPIError(t, err)
	if ae.Code != 190 || ae.Subcode != 463 || ae.HTTPStatus != http.StatusUnauthorized || !ae.IsAuth() || ae.Retryable() || !whatsapp.IsAuth(err) {
		t.Errorf("expired token error = %+v", ae)
	}
	if !strings.Contains(ae.Reason(), "access token is invalid or has expired") || !strings.Contains(ae.Message, "Session has expired") || ae.TraceID == "" {
		t.Errorf("reason %q message %q", ae.Reason(), ae.Message)
	}

	// A new token saved at run time is used by the next call.
	srv.SetToken("fresh-token")
	mu.Lock()
	current = "fresh-token"
	mu.Unlock()
	if _, err := c.Send(t.Context(), pnid, whatsapp.OutgoingMessage{To: "1", Text: &whatsapp.OutgoingText{Body: "x"}}); err != nil {
		t.Errorf("after rotation: %v", err)
	}

	srv.SetTokenExpiry(time.Now().Add(time.Hour))
	if _, err := c.PhoneNumber(t.Context(), pnid); err != nil {
		t.Errorf("token not yet expired: %v", err)
	}
}

func TestTokenProblems(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	tests := []struct {
		name     string
		token    whatsapp.TokenFunc
		wantCode int
		wantErr  error
	}{
		{"wrong token", whatsapp.StaticToken("stolen"), 190, nil},
		{"no token configured", whatsapp.StaticToken(""), 0, whatsapp.ErrNoToken},
		{"token source fails", func(context.Context) (string, error) { return "", errors.New("settings unreadable") }, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := srv.Calls(whatsapptest.RoutePhoneNumber)
			c := whatsapp.New(whatsapp.Options{BaseURL: srv.BaseURL(), Token: tt.token})
			_, err := c.PhoneNumber(t.Context(), pnid)
			if err == nil {
				t.Fatal("no error")
			}
			if tt.wantCode != 0 {
				ae := mustAPIError(t, err)
				if ae.Code != tt.wantCode || !ae.IsAuth() {
					t.Errorf("err = %+v", ae)
				}
				return
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if srv.Calls(whatsapptest.RoutePhoneNumber) != before {
				t.Error("a request was made without a token")
			}
			if whatsapp.IsRetryable(err) && errors.Is(err, whatsapp.ErrNoToken) {
				t.Error("ErrNoToken is retryable")
			}
		})
	}
}

func TestInjectedFailures(t *testing.T) {
	tests := []struct {
		name       string
		route      whatsapptest.Route
		failure    whatsapptest.Failure
		call       func(c *whatsapp.Client) error
		code       int
		status     int
		retryable  bool
		auth       bool
		retryAfter time.Duration
		reason     string
	}{
		{"24h window on send", whatsapptest.RouteSend, whatsapptest.FailReengagement, sendText, 131047, 400, false, false, 0,
			"More than 24 hours have passed since the customer last wrote; WhatsApp only allows a template message now."},
		{"fixture body 131047", whatsapptest.RouteSend, whatsapptest.Failure{Status: 400, Body: readFixture(t, "meta_error_131047.json")}, sendText, 131047, 400, false, false, 0,
			"More than 24 hours have passed since the customer last wrote; WhatsApp only allows a template message now."},
		{"fixture body 190", whatsapptest.RoutePhoneNumber, whatsapptest.Failure{Status: 401, Body: readFixture(t, "meta_error_190.json")}, phoneNumber, 190, 401, false, true, 0,
			"access token is invalid or has expired"},
		{"throughput", whatsapptest.RouteSend, whatsapptest.FailThroughput, sendText, 130429, 400, true, false, 0, "messages per second"},
		{"pair rate limit", whatsapptest.RouteSend, whatsapptest.FailPairRateLimit, sendText, 131056, 400, true, false, 6 * time.Second, "about one every six seconds"},
		{"internal error", whatsapptest.RouteSend, whatsapptest.FailInternal, sendText, 131000, 500, true, false, 0, "internal error"},
		{"undeliverable", whatsapptest.RouteSend, whatsapptest.FailUndeliverable, sendText, 131026, 400, false, false, 0, "could not deliver"},
		{"429 with Retry-After", whatsapptest.RouteMediaInfo, whatsapptest.Failure{Status: 429, Code: 4, Message: "(#4) Application request limit reached",
			Header: http.Header{"Retry-After": {"7"}}}, mediaInfo, 4, 429, true, false, 7 * time.Second, "limit on API calls"},
		{"502 HTML from a proxy", whatsapptest.RouteMarkRead, whatsapptest.Failure{Status: 502, Body: []byte("<html>Bad Gateway</html>")}, markRead, 0, 502, true, false, 0, "HTTP 502"},
		{"upload media error", whatsapptest.RouteUpload, whatsapptest.Failure{Status: 400, Code: 131053, Message: "(#131053) Media upload error", Details: "unsupported type"}, upload, 131053, 400, false, false, 0, "unsupported type"},
		{"download 404", whatsapptest.RouteMediaDownload, whatsapptest.Failure{Status: 404, Body: []byte("Not Found")}, downloadMedia, 0, 404, false, false, 0, "Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := whatsapptest.NewServer(t, whatsapptest.Options{})
			c := newClientWith(t, srv, noRetries)
			setup(srv)
			srv.FailNext(tt.route, 2, tt.failure)
			for attempt := range 2 {
				err := tt.call(c)
				ae := mustAPIError(t, err)
				if ae.Code != tt.code || ae.HTTPStatus != tt.status || ae.Retryable() != tt.retryable || ae.IsAuth() != tt.auth || ae.RetryAfter() != tt.retryAfter {
					t.Errorf("attempt %d: code %d status %d retryable %v auth %v retryAfter %v",
						attempt, ae.Code, ae.HTTPStatus, ae.Retryable(), ae.IsAuth(), ae.RetryAfter())
				}
				if whatsapp.IsRetryable(err) != tt.retryable {
					t.Errorf("IsRetryable = %v", whatsapp.IsRetryable(err))
				}
				if !strings.Contains(ae.Reason(), tt.reason) {
					t.Errorf("Reason = %q, want it to contain %q", ae.Reason(), tt.reason)
				}
			}
			if err := tt.call(c); err != nil {
				t.Errorf("third call still fails: %v", err)
			}
			if n := srv.Calls(tt.route); n != 3 {
				t.Errorf("calls = %d, want 3", n)
			}
		})
	}
}

const setupMediaID = "8000000001"

// setup gives every failure test something to download.
func setup(srv *whatsapptest.Server) {
	srv.AddMediaWithID(setupMediaID, []byte("data"), "text/plain")
}

func sendText(c *whatsapp.Client) error {
	_, err := c.Send(context.Background(), pnid, whatsapp.OutgoingMessage{To: "4915112345678", Text: &whatsapp.OutgoingText{Body: "x"}})
	return err
}

func phoneNumber(c *whatsapp.Client) error {
	_, err := c.PhoneNumber(context.Background(), pnid)
	return err
}

func mediaInfo(c *whatsapp.Client) error {
	_, err := c.MediaInfo(context.Background(), setupMediaID)
	return err
}

func markRead(c *whatsapp.Client) error {
	return c.MarkRead(context.Background(), pnid, "wamid.X")
}

func upload(c *whatsapp.Client) error {
	_, err := c.Upload(context.Background(), pnid, "a.txt", "text/plain", strings.NewReader("x"))
	return err
}

func downloadMedia(c *whatsapp.Client) error {
	_, err := c.DownloadMedia(context.Background(), setupMediaID, 0)
	return err
}

func TestErrorClassification(t *testing.T) {
	tests := []struct {
		status, code int
		typ          string
		retryable    bool
		auth         bool
		reason       string
	}{
		{500, 1, "OAuthException", true, false, "unknown error"},
		{503, 2, "OAuthException", true, false, "temporarily unavailable"},
		{400, 4, "OAuthException", true, false, "limit on API calls"},
		{400, 80007, "OAuthException", true, false, "Business Account's limit"},
		{400, 130429, "OAuthException", true, false, "messages per second"},
		{400, 131056, "OAuthException", true, false, "six seconds"},
		{500, 131000, "OAuthException", true, false, "internal error"},
		{503, 131016, "OAuthException", true, false, "overloaded"},
		{400, 131057, "OAuthException", true, false, "maintenance"},
		{400, 131047, "OAuthException", false, false, "template message"},
		{400, 131026, "OAuthException", false, false, "could not deliver"},
		{400, 131030, "OAuthException", false, false, "allowed test recipients"},
		{400, 100, "OAuthException", false, false, "invalid"},
		{401, 190, "OAuthException", false, true, "expired"},
		{401, 0, "OAuthException", false, true, "authenticate"},
		{400, 10, "OAuthException", false, false, "permission"},
		{403, 200, "OAuthException", false, false, "permission"},
		{400, 131051, "OAuthException", false, false, "does not support"},
		{400, 131052, "OAuthException", false, false, "could not download"},
		{400, 131053, "OAuthException", false, false, "uploaded media"},
		{400, 368, "OAuthException", false, false, "policy"},
		{400, 131031, "OAuthException", false, false, "locked"},
		{400, 131048, "OAuthException", false, false, "spam"},
		{400, 131049, "OAuthException", false, false, "chose not to deliver"},
		{400, 130472, "OAuthException", false, false, "experiment"},
		{400, 132001, "OAuthException", false, false, "template does not exist"},
		{400, 132999, "OAuthException", false, false, "template"},
		{500, 131026, "OAuthException", false, false, "could not deliver"},
		{500, 0, "", true, false, "HTTP 500"},
		{429, 0, "", true, false, "HTTP 429"},
		{408, 0, "", true, false, "refused"},
		{400, 999999, "OAuthException", false, false, "refused"},
		{503, 999999, "OAuthException", true, false, "HTTP 503"},
		{401, 0, "", false, true, "expired"},
	}
	for _, tt := range tests {
		e := &whatsapp.APIError{HTTPStatus: tt.status, Code: tt.code, Type: tt.typ, Message: "refused by test"}
		if e.Retryable() != tt.retryable || e.IsAuth() != tt.auth || !strings.Contains(e.Reason(), tt.reason) {
			t.Errorf("HTTP %d code %d: retryable %v auth %v reason %q", tt.status, tt.code, e.Retryable(), e.IsAuth(), e.Reason())
		}
		if wrapped := errors.Join(errors.New("context"), e); whatsapp.IsRetryable(wrapped) != tt.retryable {
			t.Errorf("HTTP %d code %d: IsRetryable through wrapping differs", tt.status, tt.code)
		}
		if e.Reason() == "" || strings.ContainsAny(e.Reason(), "\n") {
			t.Errorf("HTTP %d code %d: bad reason %q", tt.status, tt.code, e.Reason())
		}
	}
}

func TestIsRetryableTransport(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		dead := httptest.NewServer(http.NotFoundHandler())
		base := dead.URL + "/v25.0"
		dead.Close()
		c := whatsapp.New(whatsapp.Options{BaseURL: base, Token: whatsapp.StaticToken("t")})
		err := phoneNumber(c)
		var te *whatsapp.TransportError
		if !errors.As(err, &te) || !whatsapp.IsRetryable(err) || whatsapp.IsAuth(err) {
			t.Errorf("err = %v (%T)", err, err)
		}
		if !strings.Contains(whatsapp.Explain(err), "could not be reached") {
			t.Errorf("Explain = %q", whatsapp.Explain(err))
		}
	})
	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		t.Cleanup(slow.Close)
		t.Cleanup(func() { close(release) })
		c := whatsapp.New(whatsapp.Options{BaseURL: slow.URL + "/v25.0", Token: whatsapp.StaticToken("t"), Timeout: 50 * time.Millisecond})
		err := phoneNumber(c)
		if !errors.Is(err, context.DeadlineExceeded) || !whatsapp.IsRetryable(err) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("caller cancels", func(t *testing.T) {
		srv := whatsapptest.NewServer(t, whatsapptest.Options{})
		c := newClient(t, srv)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := c.PhoneNumber(ctx, pnid)
		if !errors.Is(err, context.Canceled) || !whatsapp.IsRetryable(err) {
			t.Errorf("err = %v", err)
		}
	})
	for _, err := range []error{nil, whatsapp.ErrNoToken, whatsapp.ErrTooLarge, whatsapp.ErrInvalidMessage, whatsapp.ErrUnsafeURL, errors.New("other")} {
		if whatsapp.IsRetryable(err) {
			t.Errorf("IsRetryable(%v) = true", err)
		}
	}
}

func TestExplain(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{whatsapp.ErrNoToken, "No WhatsApp access token is configured"},
		{&whatsapp.APIError{HTTPStatus: 400, Code: 131047}, "More than 24 hours"},
		{errors.Join(whatsapp.ErrTooLarge), "larger than allowed"},
		{whatsapp.ErrChecksumMismatch, "checksum"},
		{context.Canceled, "cancelled"},
		{errors.New("boom"), "failed: boom"},
	}
	for _, tt := range tests {
		if got := whatsapp.Explain(tt.err); !strings.Contains(got, tt.want) || (tt.want == "" && got != "") {
			t.Errorf("Explain(%v) = %q, want it to contain %q", tt.err, got, tt.want)
		}
	}
}

func TestNewPanicsOnWiringMistakes(t *testing.T) {
	tests := []struct {
		name string
		opts whatsapp.Options
	}{
		{"no base URL", whatsapp.Options{Token: whatsapp.StaticToken("t")}},
		{"relative base URL", whatsapp.Options{BaseURL: "graph.facebook.com/v25.0", Token: whatsapp.StaticToken("t")}},
		{"no token function", whatsapp.Options{BaseURL: "https://graph.facebook.com/v25.0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("New did not panic")
				}
			}()
			whatsapp.New(tt.opts)
		})
	}
}

func TestLogsNeverShowTheToken(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{Token: "EAAG-very-secret-token"})
	var buf bytes.Buffer
	c := whatsapp.New(whatsapp.Options{
		BaseURL: srv.BaseURL(),
		Token:   whatsapp.StaticToken(srv.Token()),
		Logger:  slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	id := srv.AddMedia([]byte("x"), "text/plain")
	if _, err := c.DownloadMedia(t.Context(), id, 0); err != nil {
		t.Fatal(err)
	}
	_ = sendText(c)
	srv.ExpireToken()
	_ = sendText(c)
	logs := buf.String()
	if strings.Contains(logs, "very-secret") || strings.Contains(logs, "hash=") {
		t.Errorf("logs leak a secret:\n%s", logs)
	}
	for _, key := range []string{`"op":"send"`, `"duration_ms":`, `"status":401`, `"path":"/whatsapp_business/attachments/"`} {
		if !strings.Contains(logs, key) {
			t.Errorf("logs lack %s:\n%s", key, logs)
		}
	}
}

func TestConcurrentSendsAreAllRecorded(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	c := newClient(t, srv)
	var wg sync.WaitGroup
	ids := make(chan string, 20)
	for range 20 {
		wg.Go(func() {
			wamid, err := c.Send(t.Context(), pnid, whatsapp.OutgoingMessage{To: "1", Text: &whatsapp.OutgoingText{Body: "x"}})
			if err != nil {
				t.Error(err)
			}
			ids <- wamid
		})
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		seen[id] = true
	}
	if len(seen) != 20 || len(srv.Sent()) != 20 || srv.Calls(whatsapptest.RouteSend) != 20 {
		t.Errorf("unique wamids %d, recorded %d", len(seen), len(srv.Sent()))
	}
}

// TestBaseURLFuncAppliesAtOnce: a Graph root read per request follows a
// changed setting without a new client; an unusable value falls back to
// BaseURL.
func TestBaseURLFuncAppliesAtOnce(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	root := "http://127.0.0.1:1/v25.0" // nothing listens there
	c := whatsapp.New(whatsapp.Options{
		BaseURL:     "http://127.0.0.1:1/v25.0",
		BaseURLFunc: func(context.Context) (string, error) { return root, nil },
		Token:       whatsapp.StaticToken(srv.Token()),
		Retries:     -1, // the dead root is refused on every try
	})
	if _, err := c.PhoneNumber(t.Context(), pnid); err == nil {
		t.Fatal("a dead root answered")
	}
	root = srv.BaseURL()
	if _, err := c.PhoneNumber(t.Context(), pnid); err != nil {
		t.Fatalf("after the root changed: %v", err)
	}
	root = "not a url"
	if _, err := c.PhoneNumber(t.Context(), pnid); err == nil {
		t.Fatal("a malformed root did not fall back to BaseURL")
	}
}

// TestCutOffSuccessIsRetryable: a 200 whose body does not decode (cut off
// on the way) is reported as retryable, like a lost answer, not as a
// permanent failure.
func TestCutOffSuccessIsRetryable(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	c := newClient(t, srv)
	srv.FailNext(whatsapptest.RouteSend, 1, whatsapptest.Failure{Status: 200, Body: []byte(`{"messaging_product":"whatsapp","messages":[{"id":"wam`)})
	_, err := c.Send(t.Context(), pnid, whatsapp.OutgoingMessage{To: "4915112345678", Text: &whatsapp.OutgoingText{Body: "hi"}})
	if err == nil || !whatsapp.IsRetryable(err) {
		t.Fatalf("err = %v, retryable %v; want a retryable error", err, whatsapp.IsRetryable(err))
	}
}
