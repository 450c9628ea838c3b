// Package assets serves wabridge's static files (stylesheet, htmx and its
// SSE extension) under content-hashed names, so that browsers may cache each
// file for a year and still fetch a new one the moment its content changes.
//
// A Set is built once at startup from a read-only tree, usually the embedded
// assets/static folder. Pages ask the Set for a file's current URL with Path;
// the Set itself is the http.Handler that answers those URLs.
package assets

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"
)

// Prefix is the URL path under which a Set serves its files.
const Prefix = "/static/"

// hashLen is the number of hex digits of the SHA-256 that go into a file
// name. Eight digits (32 bits) are plenty to tell versions of one file apart;
// the name only has to change when the content does.
const hashLen = 8

// cacheForever is sent with every file: the name changes with the content,
// so a cached copy can never be stale.
const cacheForever = "public, max-age=31536000, immutable"

// contentTypes fixes the types of the extensions we ship, because
// mime.TypeByExtension consults the host's /etc/mime.types and would make
// the answer depend on the machine.
var contentTypes = map[string]string{
	".css":   "text/css; charset=utf-8",
	".js":    "text/javascript; charset=utf-8",
	".mjs":   "text/javascript; charset=utf-8",
	".json":  "application/json",
	".map":   "application/json",
	".txt":   "text/plain; charset=utf-8",
	".svg":   "image/svg+xml",
	".png":   "image/png",
	".jpg":   "image/jpeg",
	".jpeg":  "image/jpeg",
	".gif":   "image/gif",
	".webp":  "image/webp",
	".ico":   "image/x-icon",
	".woff2": "font/woff2",
}

// compressible lists the content types worth gzipping; images and fonts are
// compressed already.
var compressible = []string{
	"text/css", "text/javascript", "text/plain", "application/json", "image/svg+xml",
}

// file is one static file with everything needed to answer for it.
type file struct {
	name        string // logical name, e.g. "vendor/htmx.min.js"
	hashed      string // name with the hash, e.g. "vendor/htmx.min.3f2a9c1b.js"
	contentType string
	etag        string
	body        []byte
	gzipBody    []byte // nil when gzip would not make the file smaller
	gzipETag    string
}

// Set is an immutable collection of static files addressed by content hash.
// It is safe for concurrent use.
type Set struct {
	byName   map[string]*file // logical name → file
	byHashed map[string]*file // hashed name → file
}

// New reads every regular file of fsys, computes its content hash and, for
// text types, a gzip-compressed copy. Names are slash-separated paths
// relative to the root of fsys; pass fs.Sub(embedded, "assets/static") so
// that "app.css" is served as /static/app.<hash>.css.
//
// New returns an error when fsys cannot be walked or read, or holds no file
// at all. The Set keeps the file contents in memory; fsys is not used after
// New returns.
func New(fsys fs.FS) (*Set, error) {
	s := &Set{byName: map[string]*file{}, byHashed: map[string]*file{}}
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		f, err := newFile(name, body)
		if err != nil {
			return err
		}
		if other, ok := s.byHashed[f.hashed]; ok {
			// Two files like "a.css" and "a.<hash>.css" could collide;
			// refuse rather than serve the wrong one.
			return fmt.Errorf("%s and %s map to the same name %s", other.name, name, f.hashed)
		}
		s.byName[name] = f
		s.byHashed[f.hashed] = f
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("assets: %w", err)
	}
	if len(s.byName) == 0 {
		return nil, fmt.Errorf("assets: no files found")
	}
	return s, nil
}

func newFile(name string, body []byte) (*file, error) {
	sum := sha256.Sum256(body)
	digest := hex.EncodeToString(sum[:])
	f := &file{
		name:        name,
		hashed:      hashedName(name, digest[:hashLen]),
		contentType: contentTypeOf(name),
		// The ETag carries more of the digest than the name does: it is
		// compared by caches that may outlive a rename.
		etag: `"` + digest[:32] + `"`,
		body: body,
	}
	if isCompressible(f.contentType) {
		var buf bytes.Buffer
		zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		if err != nil {
			return nil, err
		}
		if _, err := zw.Write(body); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
		if buf.Len() < len(body) {
			f.gzipBody = buf.Bytes()
			// A different representation needs a different strong ETag.
			f.gzipETag = `"` + digest[:32] + `-gz"`
		}
	}
	return f, nil
}

// hashedName inserts the hash before the last extension of the base name:
// "vendor/htmx.min.js" becomes "vendor/htmx.min.<hash>.js", "LICENSE"
// becomes "LICENSE.<hash>".
func hashedName(name, hash string) string {
	dir, base := path.Split(name)
	ext := path.Ext(base)
	if ext == base { // a dot file such as ".keep" has no stem
		ext = ""
	}
	return dir + strings.TrimSuffix(base, ext) + "." + hash + ext
}

// logicalName reverses hashedName when hashed has the shape of a hashed
// name; ok is false otherwise.
func logicalName(hashed string) (name string, ok bool) {
	dir, base := path.Split(hashed)
	ext := path.Ext(base)
	stem := strings.TrimSuffix(base, ext)
	hash := path.Ext(stem)
	if len(hash) != hashLen+1 || !isHex(hash[1:]) {
		// Maybe the hash is the last "extension", as in "LICENSE.<hash>".
		if len(ext) == hashLen+1 && isHex(ext[1:]) && stem != "" {
			return dir + stem, true
		}
		return "", false
	}
	return dir + strings.TrimSuffix(stem, hash) + ext, true
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return s != ""
}

func contentTypeOf(name string) string {
	ext := strings.ToLower(path.Ext(name))
	if t, ok := contentTypes[ext]; ok {
		return t
	}
	if t := mime.TypeByExtension(ext); t != "" {
		return t
	}
	return "application/octet-stream"
}

func isCompressible(contentType string) bool {
	base, _, _ := strings.Cut(contentType, ";")
	return slices.Contains(compressible, base)
}

// Path returns the URL path of the current version of the named file, e.g.
// Path("app.css") = "/static/app.3f2a9c1b.css". The name is relative to the
// root of the tree given to New.
//
// Path panics when no such file exists: names are fixed in the code that
// renders pages, so a typo is a programmer error that every test of that
// page will reveal.
func (s *Set) Path(name string) string {
	f, ok := s.byName[name]
	if !ok {
		panic(fmt.Sprintf("assets: no static file named %q", name))
	}
	return Prefix + f.hashed
}

// ServeHTTP answers GET and HEAD for Prefix + a hashed name with the file,
// cacheable for a year (Cache-Control: public, max-age=31536000,
// immutable), its Content-Type, X-Content-Type-Options: nosniff and an ETag,
// gzip-compressed when the client accepts gzip and that makes it smaller.
//
// A name carrying an outdated hash of an existing file is redirected (302,
// not cacheable) to the current version: a page rendered before an upgrade
// then still gets its stylesheet. Any other path, including the plain name
// without a hash, gets 404; other methods get 405.
func (s *Set) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")

	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}

	rel, ok := strings.CutPrefix(r.URL.Path, Prefix)
	// Names are looked up in a map built from the tree itself, so no path
	// can reach outside it; refusing unclean paths early keeps "..", "//"
	// and backslashes from ever looking like a match.
	if !ok || !fs.ValidPath(rel) || strings.Contains(rel, `\`) {
		http.NotFound(w, r)
		return
	}
	f, ok := s.byHashed[rel]
	if !ok {
		s.redirectStale(w, r, rel)
		return
	}

	body, etag := f.body, f.etag
	h.Add("Vary", "Accept-Encoding")
	if f.gzipBody != nil && acceptsGzip(r.Header.Values("Accept-Encoding")) {
		body, etag = f.gzipBody, f.gzipETag
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("Content-Type", f.contentType)
	h.Set("Cache-Control", cacheForever)
	h.Set("ETag", etag)
	// ServeContent answers If-None-Match with 304, HEAD without a body and
	// Range requests; the zero modification time leaves out Last-Modified.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// redirectStale sends the current URL of a file whose hash is out of date,
// or 404 when rel names no known file at all.
func (s *Set) redirectStale(w http.ResponseWriter, r *http.Request, rel string) {
	name, ok := logicalName(rel)
	if !ok {
		http.NotFound(w, r)
		return
	}
	f, ok := s.byName[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	// The old URL must not be remembered as pointing at this version.
	w.Header().Set("Cache-Control", "no-cache")
	http.Redirect(w, r, Prefix+f.hashed, http.StatusFound)
}

// acceptsGzip reports whether the Accept-Encoding values allow gzip: an
// explicit "gzip" decides by its qvalue; otherwise "*" does.
func acceptsGzip(values []string) bool {
	gzip, star := "", ""
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(part, ";")
			q := "1"
			for p := range strings.SplitSeq(params, ";") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(p), "q="); ok {
					q = v
				}
			}
			switch strings.ToLower(strings.TrimSpace(coding)) {
			case "gzip", "x-gzip":
				gzip = q
			case "*":
				star = q
			}
		}
	}
	if gzip != "" {
		return !isZeroQ(gzip)
	}
	return star != "" && !isZeroQ(star)
}

// isZeroQ reports whether a qvalue ("0", "0.0", "0.000") means "not
// acceptable".
func isZeroQ(q string) bool {
	return strings.HasPrefix(q, "0") && strings.Trim(q, "0.") == ""
}
