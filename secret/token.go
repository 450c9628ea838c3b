package secret

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters for HashToken: OWASP's baseline for argon2id
// (19 MiB of memory, 2 passes, 1 lane), a 16-byte random salt and a 32-byte
// output. One hash or check takes roughly 20-40 ms on one core of a small
// VPS, cheap for a login and costly for offline guessing. The parameters
// are written into every hash, so raising them later keeps old hashes
// valid.
const (
	tokenMemoryKiB = 19 * 1024
	tokenTime      = 2
	tokenThreads   = 1
	tokenSaltLen   = 16
	tokenKeyLen    = 32
)

// Bounds a stored hash must respect before CheckToken runs it: the hash
// comes from the database, and a damaged or planted one must not make a
// login allocate gigabytes or spin for minutes.
const (
	maxMemoryKiB = 256 * 1024
	maxTime      = 16
	maxThreads   = 16
)

var b64 = base64.RawStdEncoding

// HashToken returns a self-describing argon2id hash of token in the PHC
// string format,
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
//
// with salt and hash in unpadded standard base64. Each call uses a new
// random salt, so equal tokens give different hashes. An empty token is
// refused.
func HashToken(token string) (string, error) {
	if token == "" {
		return "", errors.New("secret: hash token: empty token")
	}
	salt := make([]byte, tokenSaltLen)
	rand.Read(salt)
	sum := argon2.IDKey([]byte(token), salt, tokenTime, tokenMemoryKiB, tokenThreads, tokenKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, tokenMemoryKiB, tokenTime, tokenThreads, b64.EncodeToString(salt), b64.EncodeToString(sum)), nil
}

// CheckToken reports whether token matches hash, a string made by
// HashToken (any parameters within sane bounds). The comparison of the
// derived bytes is constant-time. A malformed hash or an empty token gives
// false.
func CheckToken(hash, token string) bool {
	if token == "" {
		return false
	}
	p, ok := parseTokenHash(hash)
	if !ok {
		return false
	}
	sum := argon2.IDKey([]byte(token), p.salt, p.time, p.memory, p.threads, uint32(len(p.sum)))
	return subtle.ConstantTimeCompare(sum, p.sum) == 1
}

type tokenHash struct {
	memory, time uint32
	threads      uint8
	salt, sum    []byte
}

func parseTokenHash(s string) (tokenHash, bool) {
	// "", "argon2id", "v=19", "m=…,t=…,p=…", salt, hash
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return tokenHash{}, false
	}
	var p tokenHash
	var m, t, th uint64
	seen := 0
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return tokenHash{}, false
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return tokenHash{}, false
		}
		switch k {
		case "m":
			m = n
		case "t":
			t = n
		case "p":
			th = n
		default:
			return tokenHash{}, false
		}
		seen++
	}
	if seen != 3 || m < 8 || m > maxMemoryKiB || t < 1 || t > maxTime || th < 1 || th > maxThreads || m < 8*th {
		return tokenHash{}, false
	}
	salt, err1 := b64.DecodeString(parts[4])
	sum, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(sum) < 16 || len(sum) > 64 {
		return tokenHash{}, false
	}
	p.memory, p.time, p.threads, p.salt, p.sum = uint32(m), uint32(t), uint8(th), salt, sum
	return p, true
}
