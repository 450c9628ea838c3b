package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"wabridge/settings"
	"wabridge/whatsapp"
)

// defaultFetchTimeout bounds one file download from the portal: long
// enough for a 100 MB document on a slow link.
const defaultFetchTimeout = 5 * time.Minute

// maxRedirects bounds the redirects followed for one file link; Bitrix24's
// short links need one.
const maxRedirects = 5

// fileRefusal means a file will not go to WhatsApp, for a reason the
// operator can read; retrying does not change it.
type fileRefusal struct{ reason string }

func (e *fileRefusal) Error() string { return e.reason }

// fetchError is a download that failed in a way that may pass (the portal
// down, a 5xx); the attempt is retried on relay.retry_schedule.
type fetchError struct {
	reason string
	err    error
}

func (e *fetchError) Error() string { return "fetch file from Bitrix24: " + e.reason }
func (e *fetchError) Unwrap() error { return e.err }

// errOffPortal marks a redirect away from the portal's host.
var errOffPortal = errors.New("redirect leaves the portal")

// portalClient returns a copy of c whose redirects must stay on host over
// http(s), never from https down to http, and at most maxRedirects deep.
func portalClient(c *http.Client, host string, secure bool) *http.Client {
	cc := *c
	cc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		u := req.URL
		switch {
		case len(via) >= maxRedirects:
			return fmt.Errorf("%w: more than %d redirects", errOffPortal, maxRedirects)
		case !strings.EqualFold(u.Host, host) || u.User != nil:
			return fmt.Errorf("%w: to %s", errOffPortal, u.Host)
		case u.Scheme != "https" && (secure || u.Scheme != "http"):
			return fmt.Errorf("%w: to a %s address", errOffPortal, u.Scheme)
		}
		return nil
	}
	return &cc
}

// portalHost returns the host (with port, if any) of the portal and
// whether it uses https: the grant's client_endpoint, else
// bitrix.portal_url. ok is false when neither is known.
func (r *Relay) portalHost(ctx context.Context) (host string, secure, ok bool) {
	if r.out.grants != nil {
		if g, err := r.out.grants.Load(ctx); err == nil {
			if u, err := url.Parse(g.ClientEndpoint); err == nil && u.Host != "" && (u.Scheme == "https" || u.Scheme == "http") {
				return strings.ToLower(u.Host), u.Scheme == "https", true
			}
		}
	}
	if u, err := url.Parse(r.setting(ctx, settings.BitrixPortalURL)); err == nil && u.Host != "" && (u.Scheme == "https" || u.Scheme == "http") {
		return strings.ToLower(u.Host), u.Scheme == "https", true
	}
	return "", false, false
}

// portalFile is a file fetched from the portal, with what it will be on
// WhatsApp.
type portalFile struct {
	data []byte
	kind fileKind
}

// fetchPortalFile downloads an operator's file. It fetches only from the
// portal's own host (compared exactly, http or https, redirects only
// within that host), so a link in an event cannot make the bridge reach
// anything else (SSRF). The #img.ext fragment Bitrix24 appends is removed
// and its extension used as a hint. The type is sniffed from the first
// bytes; the body is read only up to WhatsApp's limit for that type. A
// file that cannot go is a *fileRefusal; a failure that may pass a
// *fetchError.
func (r *Relay) fetchPortalFile(ctx context.Context, link, name string, size, width, height int64) (*portalFile, error) {
	u, err := url.Parse(strings.TrimSpace(link))
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.User != nil {
		return nil, &fileRefusal{"its link is not a web address of the Bitrix24 portal"}
	}
	host, secure, ok := r.portalHost(ctx)
	if !ok {
		return nil, &fileRefusal{"the bridge does not know the Bitrix24 portal's address yet (install the application or set bitrix.portal_url)"}
	}
	if !strings.EqualFold(u.Host, host) || (secure && u.Scheme != "https") {
		return nil, &fileRefusal{fmt.Sprintf("it is not stored on this Bitrix24 portal (%s), and the bridge fetches files only from the portal itself", host)}
	}
	hint := name
	if frag := u.Fragment; strings.Contains(frag, ".") {
		// "#img.png": the portal's hint of an image's type.
		if e := path.Ext(frag); e != "" && path.Ext(hint) == "" {
			hint += e
		}
	}
	u.Fragment, u.RawFragment = "", ""
	if size > maxDocumentBytes {
		return nil, &fileRefusal{fmt.Sprintf("it is %s, and WhatsApp accepts files up to %s", sizeWords(size), sizeWords(maxDocumentBytes))}
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, &fileRefusal{"its link is not a web address of the Bitrix24 portal"}
	}
	resp, err := portalClient(r.out.http, host, secure).Do(req)
	if err != nil {
		if errors.Is(err, errOffPortal) {
			return nil, &fileRefusal{"its link leads away from the Bitrix24 portal, and the bridge fetches files only from the portal itself"}
		}
		return nil, &fetchError{reason: "the portal could not be reached", err: err}
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout:
		return nil, &fetchError{reason: fmt.Sprintf("the portal answered HTTP %d", resp.StatusCode)}
	case resp.StatusCode != http.StatusOK:
		return nil, &fileRefusal{fmt.Sprintf("Bitrix24 did not hand it out (HTTP %d); the link may have expired", resp.StatusCode)}
	}

	head := make([]byte, 512)
	n, err := io.ReadFull(resp.Body, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, &fetchError{reason: "the download broke off", err: err}
	}
	head = head[:n]
	if size <= 0 && resp.ContentLength > 0 {
		size = resp.ContentLength
	}
	kind := chooseKind(sniffMIME(head, hint), size, width, height)
	limit := maxBytesFor(kind.waType)
	if kind.waType == whatsapp.TypeSticker {
		// A sticker that turns out larger goes as a document.
		limit = maxDocumentBytes
	}
	if size > limit {
		return nil, &fileRefusal{tooLarge(kind.waType, size, true)}
	}
	rest, err := io.ReadAll(io.LimitReader(resp.Body, limit+1-int64(n)))
	if err != nil {
		return nil, &fetchError{reason: "the download broke off", err: err}
	}
	data := append(head, rest...)
	if int64(len(data)) > limit {
		return nil, &fileRefusal{tooLarge(kind.waType, limit, false)}
	}
	if kind.waType == whatsapp.TypeSticker && int64(len(data)) > maxStickerBytes {
		kind.waType = whatsapp.TypeDocument
	}
	return &portalFile{data: data, kind: kind}, nil
}

// tooLarge words a size refusal: the file's size when exact, else only
// that it is over the limit.
func tooLarge(waType string, n int64, exact bool) string {
	if exact {
		return fmt.Sprintf("it is %s, and WhatsApp accepts %s only up to %s", sizeWords(n), kindWords(waType), sizeWords(maxBytesFor(waType)))
	}
	return fmt.Sprintf("it is larger than %s, the most WhatsApp accepts for %s", sizeWords(maxBytesFor(waType)), kindWords(waType))
}
