package relay

import (
	"bytes"
	"fmt"
	"net/http"
	"path"
	"strings"

	"wabridge/whatsapp"
)

// WhatsApp's size limits for media sent by the business, per message type.
const (
	maxImageBytes    = 5 << 20
	maxAudioBytes    = 16 << 20
	maxVideoBytes    = 16 << 20
	maxDocumentBytes = 100 << 20
	maxStickerBytes  = 500 << 10
)

// maxBytesFor returns the size limit of a WhatsApp media type.
func maxBytesFor(waType string) int64 {
	switch waType {
	case whatsapp.TypeImage:
		return maxImageBytes
	case whatsapp.TypeAudio:
		return maxAudioBytes
	case whatsapp.TypeVideo:
		return maxVideoBytes
	case whatsapp.TypeSticker:
		return maxStickerBytes
	}
	return maxDocumentBytes
}

// kindWords names a WhatsApp media type for the operator.
func kindWords(waType string) string {
	switch waType {
	case whatsapp.TypeImage:
		return "images"
	case whatsapp.TypeAudio:
		return "audio files"
	case whatsapp.TypeVideo:
		return "videos"
	case whatsapp.TypeSticker:
		return "stickers"
	}
	return "documents"
}

// extMIME is the type a file name's extension stands for, used where the
// bytes alone do not tell (Office files are zip or OLE containers, many
// audio formats have no signature http.DetectContentType knows).
var extMIME = map[string]string{
	".pdf":  "application/pdf",
	".doc":  "application/msword",
	".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
	".xls":  "application/vnd.ms-excel",
	".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
	".ppt":  "application/vnd.ms-powerpoint",
	".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
	".txt":  "text/plain",
	".csv":  "text/csv",
	".zip":  "application/zip",
	".jpg":  "image/jpeg",
	".jpeg": "image/jpeg",
	".png":  "image/png",
	".webp": "image/webp",
	".gif":  "image/gif",
	".mp3":  "audio/mpeg",
	".m4a":  "audio/mp4",
	".aac":  "audio/aac",
	".amr":  "audio/amr",
	".ogg":  "audio/ogg",
	".opus": "audio/ogg",
	".mp4":  "video/mp4",
	".3gp":  "video/3gpp",
}

// sniffMIME decides a file's MIME type from its first bytes, refined by the
// extension of its name for containers that hold several formats. It
// never trusts the extension over bytes that say something else, so a
// renamed executable stays application/octet-stream.
func sniffMIME(head []byte, name string) string {
	ext := strings.ToLower(path.Ext(name))
	switch {
	case bytes.HasPrefix(head, []byte("OggS")):
		// WhatsApp plays Ogg only with the Opus codec, whose first page
		// names it.
		if bytes.Contains(head, []byte("OpusHead")) {
			return "audio/ogg"
		}
		return "application/ogg"
	case bytes.HasPrefix(head, []byte("#!AMR")):
		return "audio/amr"
	case len(head) >= 12 && string(head[4:8]) == "ftyp":
		return ftypMIME(string(head[8:12]))
	case len(head) >= 12 && string(head[:4]) == "RIFF" && string(head[8:12]) == "WEBP":
		return "image/webp"
	case bytes.HasPrefix(head, []byte("%PDF-")):
		return "application/pdf"
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		switch ext {
		case ".docx", ".xlsx", ".pptx":
			return extMIME[ext]
		}
		return "application/zip"
	case bytes.HasPrefix(head, []byte("\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1")):
		switch ext {
		case ".doc", ".xls", ".ppt":
			return extMIME[ext]
		}
		return "application/octet-stream"
	case len(head) >= 2 && head[0] == 0xFF && head[1]&0xF6 == 0xF0:
		return "audio/aac" // ADTS frame
	case len(head) >= 2 && head[0] == 0xFF && head[1]&0xE0 == 0xE0 && (head[1]>>1)&3 == 1:
		return "audio/mpeg" // an MP3 (layer III) frame without ID3 tag
	}
	ct := http.DetectContentType(head)
	if mt, _, ok := strings.Cut(ct, ";"); ok {
		ct = strings.TrimSpace(mt)
	}
	if ct == "text/plain" && ext == ".csv" {
		return "text/csv"
	}
	return ct
}

// ftypMIME reads the major brand of an ISO media file.
func ftypMIME(brand string) string {
	switch {
	case strings.HasPrefix(brand, "3g"):
		return "video/3gpp"
	case brand == "M4A " || brand == "M4B ":
		return "audio/mp4"
	case brand == "qt  ":
		return "video/quicktime"
	}
	return "video/mp4"
}

// fileKind is how a file goes to WhatsApp.
type fileKind struct {
	waType string // image, audio, video, document or sticker
	mime   string // the type named in the upload
}

// chooseKind picks the WhatsApp message type for a file: the types
// WhatsApp plays inline go as themselves, a 512×512 WebP of at most
// maxStickerBytes as a sticker, anything else as a document, which
// WhatsApp delivers as a file to download.
func chooseKind(mimeType string, size, width, height int64) fileKind {
	switch mimeType {
	case "image/jpeg", "image/png":
		return fileKind{whatsapp.TypeImage, mimeType}
	case "image/webp":
		if width == 512 && height == 512 && size <= maxStickerBytes {
			return fileKind{whatsapp.TypeSticker, mimeType}
		}
	case "audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg":
		return fileKind{whatsapp.TypeAudio, mimeType}
	case "video/mp4", "video/3gpp":
		return fileKind{whatsapp.TypeVideo, mimeType}
	}
	return fileKind{whatsapp.TypeDocument, mimeType}
}

// sizeWords renders a byte count for the operator.
func sizeWords(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%d KB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// captionOK reports whether a WhatsApp media type carries a caption.
func captionOK(waType string) bool {
	switch waType {
	case whatsapp.TypeImage, whatsapp.TypeVideo, whatsapp.TypeDocument:
		return true
	}
	return false
}
