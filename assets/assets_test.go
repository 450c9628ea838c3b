package assets_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	"wabridge/assets"
)

var (
	css = strings.Repeat("body { color: #222; }\n", 40)
	js  = strings.Repeat("console.log('wabridge');\n", 40)
)

func testFS() fstest.MapFS {
	return fstest.MapFS{
		"app.css":            {Data: []byte(css)},
		"vendor/htmx.min.js": {Data: []byte(js)},
		"logo.png":           {Data: []byte("\x89PNG\r\n\x1a\nnot really")},
		"LICENSE.txt":        {Data: []byte("x")}, // too short to gain from gzip
	}
}

func mustNew(t *testing.T, fsys fstest.MapFS) *assets.Set {
	t.Helper()
	s, err := assets.New(fsys)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func get(s http.Handler, method, target string, header http.Header) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "http://example.test/", nil)
	// Set the path after construction so that unclean paths reach the
	// handler exactly as written, as they can when it is called directly.
	r.URL.Path = target
	r.RequestURI = target
	for k, vs := range header {
		for _, v := range vs {
			r.Header.Add(k, v)
		}
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

func TestPathShape(t *testing.T) {
	s := mustNew(t, testFS())
	tests := []struct {
		name string
		want string
	}{
		{"app.css", `^/static/app\.[0-9a-f]{8}\.css$`},
		{"vendor/htmx.min.js", `^/static/vendor/htmx\.min\.[0-9a-f]{8}\.js$`},
		{"logo.png", `^/static/logo\.[0-9a-f]{8}\.png$`},
		{"LICENSE.txt", `^/static/LICENSE\.[0-9a-f]{8}\.txt$`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := s.Path(tt.name)
			if !regexp.MustCompile(tt.want).MatchString(got) {
				t.Errorf("Path(%q) = %q, want match %s", tt.name, got, tt.want)
			}
		})
	}
}

func TestPathChangesWithContent(t *testing.T) {
	a := mustNew(t, testFS())
	changed := testFS()
	changed["app.css"] = &fstest.MapFile{Data: []byte(css + "h1 { margin: 0; }\n")}
	b := mustNew(t, changed)

	if a.Path("app.css") == b.Path("app.css") {
		t.Errorf("Path(app.css) = %q for both contents, want a new name after a change", a.Path("app.css"))
	}
	if a.Path("vendor/htmx.min.js") != b.Path("vendor/htmx.min.js") {
		t.Errorf("unchanged file got a new name: %q vs %q", a.Path("vendor/htmx.min.js"), b.Path("vendor/htmx.min.js"))
	}
	// Same content, same name: the hash depends on nothing else.
	again := mustNew(t, testFS())
	if a.Path("app.css") != again.Path("app.css") {
		t.Errorf("same content gave %q and %q", a.Path("app.css"), again.Path("app.css"))
	}
}

func TestPathPanicsOnUnknownName(t *testing.T) {
	s := mustNew(t, testFS())
	for _, name := range []string{"missing.css", "/static/app.css", "static/app.css", "App.css", ""} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("Path(%q) did not panic", name)
				}
			}()
			s.Path(name)
		})
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := assets.New(fstest.MapFS{}); err == nil {
		t.Error("New(empty) succeeded, want an error")
	}
	if _, err := assets.New(fstest.MapFS{"dir": {Mode: os.ModeDir}}); err == nil {
		t.Error("New(tree with only a folder) succeeded, want an error")
	}
}

func TestServeHeaders(t *testing.T) {
	s := mustNew(t, testFS())
	tests := []struct {
		name        string
		file        string
		contentType string
		body        string
	}{
		{"css", "app.css", "text/css; charset=utf-8", css},
		{"js", "vendor/htmx.min.js", "text/javascript; charset=utf-8", js},
		{"png", "logo.png", "image/png", "\x89PNG\r\n\x1a\nnot really"},
		{"txt", "LICENSE.txt", "text/plain; charset=utf-8", "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := get(s, http.MethodGet, s.Path(tt.file), nil)
			if w.Code != http.StatusOK {
				t.Fatalf("status = %d, want 200", w.Code)
			}
			want := map[string]string{
				"Content-Type":           tt.contentType,
				"Cache-Control":          "public, max-age=31536000, immutable",
				"X-Content-Type-Options": "nosniff",
				"Content-Encoding":       "",
			}
			for k, v := range want {
				if got := w.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if etag := w.Header().Get("ETag"); !regexp.MustCompile(`^"[0-9a-f]+"$`).MatchString(etag) {
				t.Errorf("ETag = %q, want a quoted hex digest", etag)
			}
			if w.Body.String() != tt.body {
				t.Errorf("body = %q, want %q", w.Body.String(), tt.body)
			}
		})
	}
}

func TestServeGzip(t *testing.T) {
	s := mustNew(t, testFS())
	tests := []struct {
		name           string
		file           string
		acceptEncoding string
		wantGzip       bool
	}{
		{"css accepted", "app.css", "gzip, deflate, br", true},
		{"js accepted with q", "vendor/htmx.min.js", "br;q=1.0, gzip;q=0.8", true},
		{"wildcard", "app.css", "*", true},
		{"not offered", "app.css", "", false},
		{"refused", "app.css", "gzip;q=0", false},
		{"refused despite wildcard", "app.css", "gzip;q=0, *", false},
		{"image is never gzipped", "logo.png", "gzip", false},
		{"no gain for a tiny file", "LICENSE.txt", "gzip", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.acceptEncoding != "" {
				h.Set("Accept-Encoding", tt.acceptEncoding)
			}
			w := get(s, http.MethodGet, s.Path(tt.file), h)
			if w.Code != http.StatusOK {
				t.Fatalf("status = %d, want 200", w.Code)
			}
			gotGzip := w.Header().Get("Content-Encoding") == "gzip"
			if gotGzip != tt.wantGzip {
				t.Fatalf("Content-Encoding = %q, want gzip: %v", w.Header().Get("Content-Encoding"), tt.wantGzip)
			}
			if !gotGzip {
				return
			}
			if !strings.Contains(w.Header().Get("Vary"), "Accept-Encoding") {
				t.Errorf("Vary = %q, want Accept-Encoding", w.Header().Get("Vary"))
			}
			zr, err := gzip.NewReader(w.Body)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := io.ReadAll(zr)
			if err != nil {
				t.Fatal(err)
			}
			plainWant := get(s, http.MethodGet, s.Path(tt.file), nil).Body.Bytes()
			if !bytes.Equal(plain, plainWant) {
				t.Error("gzip body does not decompress to the file")
			}
			if etag, plainETag := w.Header().Get("ETag"), get(s, http.MethodGet, s.Path(tt.file), nil).Header().Get("ETag"); etag == plainETag {
				t.Errorf("gzip and identity share ETag %s; representations need their own", etag)
			}
		})
	}
}

func TestServeConditionalAndHead(t *testing.T) {
	s := mustNew(t, testFS())
	p := s.Path("app.css")
	etag := get(s, http.MethodGet, p, nil).Header().Get("ETag")

	w := get(s, http.MethodGet, p, http.Header{"If-None-Match": {etag}})
	if w.Code != http.StatusNotModified {
		t.Errorf("If-None-Match current: status = %d, want 304", w.Code)
	}
	if w.Body.Len() != 0 {
		t.Errorf("304 carried a body of %d bytes", w.Body.Len())
	}

	w = get(s, http.MethodGet, p, http.Header{"If-None-Match": {`"0000"`}})
	if w.Code != http.StatusOK {
		t.Errorf("If-None-Match other: status = %d, want 200", w.Code)
	}

	w = get(s, http.MethodHead, p, nil)
	if w.Code != http.StatusOK || w.Body.Len() != 0 {
		t.Errorf("HEAD: status %d with %d body bytes, want 200 and none", w.Code, w.Body.Len())
	}
	if w.Header().Get("Content-Type") != "text/css; charset=utf-8" {
		t.Errorf("HEAD Content-Type = %q", w.Header().Get("Content-Type"))
	}
}

func TestServeRefuses(t *testing.T) {
	s := mustNew(t, testFS())
	hashed := s.Path("app.css")
	tests := []struct {
		name   string
		method string
		path   string
		want   int
	}{
		{"unknown file", http.MethodGet, "/static/nope.1234abcd.css", http.StatusNotFound},
		{"plain name without hash", http.MethodGet, "/static/app.css", http.StatusNotFound},
		{"folder", http.MethodGet, "/static/vendor", http.StatusNotFound},
		{"folder with slash", http.MethodGet, "/static/vendor/", http.StatusNotFound},
		{"prefix only", http.MethodGet, "/static/", http.StatusNotFound},
		{"outside prefix", http.MethodGet, strings.TrimPrefix(hashed, "/static"), http.StatusNotFound},
		{"hash case changed", http.MethodGet, strings.ToUpper(hashed), http.StatusNotFound},
		{"dot dot", http.MethodGet, "/static/../assets.go", http.StatusNotFound},
		{"dot dot inside", http.MethodGet, "/static/vendor/../../go.mod", http.StatusNotFound},
		{"dot dot to real file", http.MethodGet, "/static/vendor/.." + strings.TrimPrefix(hashed, "/static"), http.StatusNotFound},
		{"dot segment", http.MethodGet, "/static/." + strings.TrimPrefix(hashed, "/static"), http.StatusNotFound},
		{"double slash", http.MethodGet, "/static//" + strings.TrimPrefix(hashed, "/static/"), http.StatusNotFound},
		{"backslash", http.MethodGet, `/static/vendor\..\` + strings.TrimPrefix(hashed, "/static/"), http.StatusNotFound},
		{"absolute inside", http.MethodGet, "/static//etc/passwd", http.StatusNotFound},
		{"encoded dots stay literal", http.MethodGet, "/static/%2e%2e/go.mod", http.StatusNotFound},
		{"POST", http.MethodPost, hashed, http.StatusMethodNotAllowed},
		{"DELETE", http.MethodDelete, hashed, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := get(s, tt.method, tt.path, nil)
			if w.Code != tt.want {
				t.Errorf("%s %s: status = %d, want %d", tt.method, tt.path, w.Code, tt.want)
			}
			if w.Header().Get("Cache-Control") == "public, max-age=31536000, immutable" {
				t.Error("a refusal was marked cacheable for a year")
			}
			if w.Header().Get("X-Content-Type-Options") != "nosniff" {
				t.Error("X-Content-Type-Options missing on a refusal")
			}
		})
	}
}

func TestServeRedirectsStaleHash(t *testing.T) {
	s := mustNew(t, testFS())
	tests := []struct {
		name  string
		stale string
		file  string
	}{
		{"stylesheet", "/static/app.00000000.css", "app.css"},
		{"nested", "/static/vendor/htmx.min.deadbeef.js", "vendor/htmx.min.js"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := get(s, http.MethodGet, tt.stale, nil)
			if w.Code != http.StatusFound {
				t.Fatalf("status = %d, want 302", w.Code)
			}
			if got, want := w.Header().Get("Location"), s.Path(tt.file); got != want {
				t.Errorf("Location = %q, want %q", got, want)
			}
			if got := w.Header().Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control = %q, want no-cache", got)
			}
		})
	}
}

// TestShippedFiles proves the files the pages link exist in the committed
// tree, so that a missing vendored script fails here and not in a browser.
func TestShippedFiles(t *testing.T) {
	s, err := assets.New(os.DirFS("static"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"app.css",
		"bitrix-install.js",
		"vendor/htmx.min.js",
		"vendor/htmx-ext-sse.min.js",
		"vendor/htmx.org-LICENSE.txt",
		"vendor/htmx-ext-sse-LICENSE.txt",
	} {
		t.Run(name, func(t *testing.T) {
			w := get(s, http.MethodGet, s.Path(name), nil)
			if w.Code != http.StatusOK || w.Body.Len() == 0 {
				t.Errorf("status %d, %d bytes; want 200 with content", w.Code, w.Body.Len())
			}
		})
	}
}
