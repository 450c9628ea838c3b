package relay

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"wabridge/settings"
)

type mapConfig map[string]string

func (m mapConfig) Get(_ context.Context, k string) (string, error) { return m[k], nil }

// fetchRelay is a Relay with just what fetchPortalFile needs: the portal
// at portalURL (bitrix.portal_url, no grant store).
func fetchRelay(portalURL string) *Relay {
	r := &Relay{cfg: mapConfig{settings.BitrixPortalURL: portalURL}, log: slog.New(slog.DiscardHandler)}
	r.out = newOutbound(Options{MessagesPerSecond: DefaultMessagesPerSecond, OutboundWorkers: 1})
	return r
}

// TestFetchPortalFile: files come only from the portal's own host, with
// redirects only within it, within WhatsApp's size limits, typed by their
// bytes.
func TestFetchPortalFile(t *testing.T) {
	var otherHits atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherHits.Add(1)
		_, _ = w.Write([]byte("%PDF-1.4 secret"))
	}))
	defer other.Close()
	png := append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{7}, 1000)...)
	webp := append([]byte("RIFF\x00\x00\x00\x00WEBPVP8 "), bytes.Repeat([]byte{1}, 1000)...)
	docx := append([]byte("PK\x03\x04"), bytes.Repeat([]byte{2}, 1000)...)
	mux := http.NewServeMux()
	mux.HandleFunc("/~img", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Fragment != "" {
			t.Errorf("fragment %q reached the portal", r.URL.Fragment)
		}
		http.Redirect(w, r, "/pub/im.file.php?FILE_ID=1&SIGN=x", http.StatusFound)
	})
	mux.HandleFunc("/pub/im.file.php", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(png) })
	mux.HandleFunc("/~away", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/x", http.StatusFound)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		// Chunked, no length: the limit must hold while reading.
		for range 7 {
			_, _ = w.Write(png)
			_, _ = w.Write(make([]byte, 1<<20))
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/webp", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(webp) })
	mux.HandleFunc("/docx", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(docx) })
	mux.HandleFunc("/down", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "busy", http.StatusServiceUnavailable) })
	portal := httptest.NewServer(mux)
	defer portal.Close()
	r := fetchRelay(portal.URL)
	ctx := context.Background()

	cases := []struct {
		name, link, file string
		w, h             int64
		wantType         string // WhatsApp type, or "" for a refusal
		refusal          string // part of the refusal, or "retry" for a *fetchError
	}{
		{"short link redirected on the portal", portal.URL + "/~img#img.png", "", 0, 0, "image", ""},
		{"another host", other.URL + "/x", "a.pdf", 0, 0, "", "not stored on this Bitrix24 portal"},
		{"another name of the same machine", strings.Replace(portal.URL, "127.0.0.1", "localhost", 1) + "/~img", "", 0, 0, "", "not stored"},
		{"redirect off the portal", portal.URL + "/~away", "a.pdf", 0, 0, "", "leads away"},
		{"not http", "file:///etc/passwd", "passwd", 0, 0, "", "not a web address"},
		{"user info in the link", strings.Replace(portal.URL, "http://", "http://u:p@", 1) + "/~img", "", 0, 0, "", "not a web address"},
		{"image too large", portal.URL + "/big", "big.png", 0, 0, "", "larger than 5.0 MB"},
		{"missing", portal.URL + "/nothing", "gone.pdf", 0, 0, "", "HTTP 404"},
		{"portal down", portal.URL + "/down", "a.pdf", 0, 0, "", "retry"},
		{"512×512 webp is a sticker", portal.URL + "/webp", "s.webp", 512, 512, "sticker", ""},
		{"other webp is a document", portal.URL + "/webp", "p.webp", 1024, 768, "document", ""},
		{"docx by its extension", portal.URL + "/docx", "offer.docx", 0, 0, "document", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := r.fetchPortalFile(ctx, c.link, c.file, 0, c.w, c.h)
			var refusal *fileRefusal
			var fe *fetchError
			switch {
			case c.wantType != "":
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if f.kind.waType != c.wantType {
					t.Errorf("type %s (%s), want %s", f.kind.waType, f.kind.mime, c.wantType)
				}
			case c.refusal == "retry":
				if !errors.As(err, &fe) {
					t.Errorf("err = %v, want a retryable fetch error", err)
				}
			default:
				if !errors.As(err, &refusal) || !strings.Contains(refusal.reason, c.refusal) {
					t.Errorf("err = %v, want a refusal containing %q", err, c.refusal)
				}
			}
		})
	}
	if n := otherHits.Load(); n != 0 {
		t.Errorf("the other host was contacted %d times", n)
	}

	// An https portal never hands files out over plain http.
	rs := fetchRelay(strings.Replace(portal.URL, "http://", "https://", 1))
	var refusal *fileRefusal
	if _, err := rs.fetchPortalFile(ctx, portal.URL+"/~img", "", 0, 0, 0); !errors.As(err, &refusal) {
		t.Errorf("http link for an https portal: err = %v, want a refusal", err)
	}
	// A declared size above every limit is refused before any request.
	if _, err := r.fetchPortalFile(ctx, portal.URL+"/~img", "x.pdf", 200<<20, 0, 0); !errors.As(err, &refusal) {
		t.Errorf("200 MB: err = %v, want a refusal", err)
	}
}

func TestSniffMIME(t *testing.T) {
	cases := []struct {
		head, name, want string
	}{
		{"\xff\xd8\xff\xe0\x00\x10JFIF", "a.jpg", "image/jpeg"},
		{"\x89PNG\r\n\x1a\n", "a", "image/png"},
		{"OggS\x00\x02" + strings.Repeat("\x00", 22) + "OpusHead", "v.ogg", "audio/ogg"},
		{"OggS\x00\x02" + strings.Repeat("\x00", 22) + "\x01vorbis", "v.ogg", "application/ogg"},
		{"\x00\x00\x00\x18ftypmp42", "v.mp4", "video/mp4"},
		{"\x00\x00\x00\x18ftyp3gp4", "v.3gp", "video/3gpp"},
		{"\x00\x00\x00\x18ftypM4A ", "a.m4a", "audio/mp4"},
		{"RIFF\x00\x00\x00\x00WEBPVP8 ", "s.webp", "image/webp"},
		{"%PDF-1.7", "x.bin", "application/pdf"},
		{"PK\x03\x04", "x.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
		{"PK\x03\x04", "x.zip", "application/zip"},
		{"PK\x03\x04", "x.exe", "application/zip"},
		{"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1", "x.doc", "application/msword"},
		{"#!AMR\n", "a.amr", "audio/amr"},
		{"ID3\x03\x00", "a.mp3", "audio/mpeg"},
		{"\xff\xfb\x90\x00", "a.mp3", "audio/mpeg"},
		{"\xff\xf1\x50\x80", "a.aac", "audio/aac"},
		{"\xff\xfeh\x00i\x00", "u.txt", "text/plain"},
		{"MZ\x90\x00", "setup.pdf", "application/octet-stream"},
		{"plain words", "notes.txt", "text/plain"},
	}
	for _, c := range cases {
		if got := sniffMIME([]byte(c.head), c.name); got != c.want {
			t.Errorf("sniffMIME(%q, %q) = %q, want %q", c.head, c.name, got, c.want)
		}
	}
}
