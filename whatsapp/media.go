package whatsapp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
)

// ErrTooLarge is returned when a download exceeds its size limit. Nothing of
// the body beyond the limit is read.
var ErrTooLarge = errors.New("whatsapp: media exceeds the size limit")

// ErrChecksumMismatch is returned when downloaded bytes do not hash to the
// SHA-256 WhatsApp announced, or when the announced value is not a SHA-256
// in hex or base64.
var ErrChecksumMismatch = errors.New("whatsapp: media checksum mismatch")

// ErrUnsafeURL is returned by Download for URLs the bearer token must not be
// sent to: anything but https, except plain http on the Graph API's own host
// (which only a local test server uses).
var ErrUnsafeURL = errors.New("whatsapp: refusing to send the token to this URL")

// MediaInfo is the Graph node of an uploaded or received media object. URL
// stays valid for about five minutes and needs the bearer token.
type MediaInfo struct {
	ID               string `json:"id"`
	URL              string `json:"url"`
	MIMEType         string `json:"mime_type"`
	SHA256           string `json:"sha256"`
	FileSize         int64  `json:"file_size"`
	MessagingProduct string `json:"messaging_product"`
}

// UnmarshalJSON accepts file_size as a number or as a string of digits.
func (m *MediaInfo) UnmarshalJSON(data []byte) error {
	type plain MediaInfo
	var aux struct {
		plain
		FileSize json.RawMessage `json:"file_size"`
	}
	if err := json.Unmarshal(data, &aux); err != nil {
		return err
	}
	*m = MediaInfo(aux.plain)
	if len(aux.FileSize) > 0 && string(aux.FileSize) != "null" {
		s := strings.Trim(string(aux.FileSize), `"`)
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("file_size %s: %w", aux.FileSize, err)
		}
		m.FileSize = n
	}
	return nil
}

// MediaInfo fetches the node of mediaID: its short-lived download URL, MIME
// type, SHA-256 (hex) and size.
func (c *Client) MediaInfo(ctx context.Context, mediaID string) (*MediaInfo, error) {
	const op = "media info"
	if err := checkID(mediaID); err != nil {
		return nil, wrapOp(op, err)
	}
	var mi MediaInfo
	if err := c.doJSON(ctx, op, repeatable, http.MethodGet, c.nodeURL(ctx, nil, mediaID), nil, &mi); err != nil {
		return nil, wrapOp(op, err)
	}
	if mi.URL == "" {
		return nil, wrapOp(op, errors.New("answer has no url"))
	}
	return &mi, nil
}

// Download fetches rawURL (a MediaInfo.URL) with the bearer token and
// returns the bytes and the Content-Type header. It reads at most maxBytes
// (DefaultMaxDownload when maxBytes <= 0) and fails with ErrTooLarge beyond
// that. Redirects are followed; the token is only forwarded to the same
// host. A non-2xx answer is an *APIError. Unlike the JSON calls, a
// download is not repeated in the call: a transfer may take minutes, and
// its callers fetch again on their own schedule.
func (c *Client) Download(ctx context.Context, rawURL string, maxBytes int64) ([]byte, string, error) {
	const op = "download"
	if maxBytes <= 0 {
		maxBytes = DefaultMaxDownload
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, "", wrapOp(op, fmt.Errorf("%w: %v", ErrUnsafeURL, err))
	}
	if u.Host == "" || !(u.Scheme == "https" || u.Scheme == "http" && u.Host == c.root(ctx).Host) {
		return nil, "", wrapOp(op, fmt.Errorf("%w: scheme %q host %q", ErrUnsafeURL, u.Scheme, u.Host))
	}
	ctx, cancel := context.WithTimeout(ctx, c.transferTimeout)
	defer cancel()
	resp, err := c.send(ctx, op, http.MethodGet, u.String(), nil, "")
	if err != nil {
		return nil, "", wrapOp(op, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, "", wrapOp(op, parseAPIError(resp, body))
	}
	if resp.ContentLength > maxBytes {
		return nil, "", wrapOp(op, fmt.Errorf("%w: %d bytes announced, limit %d", ErrTooLarge, resp.ContentLength, maxBytes))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBytes+1))
	if err != nil {
		return nil, "", wrapOp(op, &TransportError{Err: err})
	}
	if int64(len(data)) > maxBytes {
		return nil, "", wrapOp(op, fmt.Errorf("%w: limit %d bytes", ErrTooLarge, maxBytes))
	}
	return data, resp.Header.Get("Content-Type"), nil
}

// DownloadedMedia is the result of DownloadMedia. The caller owns Data.
type DownloadedMedia struct {
	Info MediaInfo
	// Data holds the file's bytes, already checked against Info.SHA256.
	Data []byte
	// ContentType is the download's Content-Type header, or Info.MIMEType
	// when the header was missing.
	ContentType string
}

// DownloadMedia resolves mediaID with MediaInfo, refuses it with ErrTooLarge
// when its announced size exceeds maxBytes (DefaultMaxDownload when <= 0),
// downloads it and checks its SHA-256. The two calls happen back to back
// because the URL expires after minutes.
func (c *Client) DownloadMedia(ctx context.Context, mediaID string, maxBytes int64) (*DownloadedMedia, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxDownload
	}
	info, err := c.MediaInfo(ctx, mediaID)
	if err != nil {
		return nil, err
	}
	if info.FileSize > maxBytes {
		return nil, wrapOp("download", fmt.Errorf("%w: %d bytes announced, limit %d", ErrTooLarge, info.FileSize, maxBytes))
	}
	data, ct, err := c.Download(ctx, info.URL, maxBytes)
	if err != nil {
		return nil, err
	}
	if info.SHA256 != "" {
		if err := VerifySHA256(data, info.SHA256); err != nil {
			return nil, wrapOp("download", err)
		}
	}
	if ct == "" {
		ct = info.MIMEType
	}
	return &DownloadedMedia{Info: *info, Data: data, ContentType: ct}, nil
}

// VerifySHA256 reports whether data hashes to want, given as hex (as in the
// media node) or base64 (as in some webhook payloads), padded or not. It
// returns nil on a match and an error wrapping ErrChecksumMismatch otherwise,
// including when want decodes to anything but 32 bytes.
func VerifySHA256(data []byte, want string) error {
	want = strings.TrimSpace(want)
	var sum []byte
	if len(want) == hex.EncodedLen(sha256.Size) {
		sum, _ = hex.DecodeString(want)
	}
	if sum == nil {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if b, err := enc.DecodeString(want); err == nil && len(b) == sha256.Size {
				sum = b
				break
			}
		}
	}
	if len(sum) != sha256.Size {
		return fmt.Errorf("%w: %q is not a SHA-256 in hex or base64", ErrChecksumMismatch, want)
	}
	got := sha256.Sum256(data)
	if subtle.ConstantTimeCompare(got[:], sum) != 1 {
		return fmt.Errorf("%w: got %x", ErrChecksumMismatch, got)
	}
	return nil
}

// Upload sends a file to WhatsApp's media store for phoneNumberID and
// returns the new media id, to be used in an OutgoingMedia.ID. mimeType
// names the file's type ("application/octet-stream" when empty); WhatsApp
// rejects types it does not carry with error 131053 or 100. The body is
// read completely into memory first so that the request has a length and
// can be sent again when Meta refuses it for a passing reason.
func (c *Client) Upload(ctx context.Context, phoneNumberID, filename, mimeType string, r io.Reader) (string, error) {
	const op = "upload"
	if err := checkID(phoneNumberID); err != nil {
		return "", wrapOp(op, err)
	}
	if mimeType == "" {
		mimeType = "application/octet-stream"
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if err := mw.WriteField("messaging_product", "whatsapp"); err != nil {
		return "", wrapOp(op, err)
	}
	if err := mw.WriteField("type", mimeType); err != nil {
		return "", wrapOp(op, err)
	}
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", multipart.FileContentDisposition("file", cleanFilename(filename)))
	h.Set("Content-Type", cleanHeaderValue(mimeType))
	part, err := mw.CreatePart(h)
	if err != nil {
		return "", wrapOp(op, err)
	}
	if _, err := io.Copy(part, r); err != nil {
		return "", wrapOp(op, fmt.Errorf("read file: %w", err))
	}
	if err := mw.Close(); err != nil {
		return "", wrapOp(op, err)
	}

	var id string
	err = c.withRetries(ctx, op, once, func(ctx context.Context) error {
		var err error
		id, err = c.tryUpload(ctx, op, c.nodeURL(ctx, nil, phoneNumberID, "media"), buf.Bytes(), mw.FormDataContentType())
		return err
	})
	if err != nil {
		return "", wrapOp(op, err)
	}
	return id, nil
}

// tryUpload is one try of Upload; TransferTimeout bounds it.
func (c *Client) tryUpload(ctx context.Context, op, target string, body []byte, contentType string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.transferTimeout)
	defer cancel()
	resp, err := c.send(ctx, op, http.MethodPost, target, bytes.NewReader(body), contentType)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return "", &TransportError{Err: err}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", parseAPIError(resp, raw)
	}
	var out struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return "", fmt.Errorf("decode answer: %w", err)
	}
	if out.ID == "" {
		return "", errors.New("answer has no id")
	}
	return out.ID, nil
}

// cleanFilename keeps the base name and replaces control characters, which
// would otherwise break the part's header.
func cleanFilename(name string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = cleanHeaderValue(name)
	if name == "" || name == "." || name == ".." {
		return "file"
	}
	return name
}

func cleanHeaderValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '_'
		}
		return r
	}, s)
}
