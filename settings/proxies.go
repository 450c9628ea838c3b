package settings

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// maxTrustedProxies bounds app.trusted_proxies; a real deployment has one
// or two proxies, and every request walks the list.
const maxTrustedProxies = 64

// ParseTrustedProxies parses a value of app.trusted_proxies: IP addresses
// and CIDR ranges separated by commas, with optional spaces. A single
// address becomes a range holding only itself; IPv4 addresses written in
// their IPv6 form (::ffff:10.0.0.1) count as IPv4. "" gives no ranges.
func ParseTrustedProxies(v string) ([]netip.Prefix, error) {
	v = Normalize(v)
	if v == "" {
		return nil, nil
	}
	parts := strings.Split(v, ",")
	if len(parts) > maxTrustedProxies {
		return nil, fmt.Errorf("at most %d entries", maxTrustedProxies)
	}
	out := make([]netip.Prefix, 0, len(parts))
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, errors.New("an empty entry")
		}
		if strings.Contains(p, "/") {
			pr, err := netip.ParsePrefix(p)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR range", p)
			}
			if pr.Addr().Is4In6() {
				if pr.Bits() < 96 {
					return nil, fmt.Errorf("%q is not a CIDR range", p)
				}
				pr = netip.PrefixFrom(pr.Addr().Unmap(), pr.Bits()-96)
			}
			out = append(out, pr.Masked())
			continue
		}
		a, err := netip.ParseAddr(p)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is not an IP address", p)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// validTrustedProxies is app.trusted_proxies' validator.
func validTrustedProxies(v string) error {
	if _, err := ParseTrustedProxies(v); err != nil {
		return fmt.Errorf("want IP addresses or CIDR ranges separated by commas, e.g. 127.0.0.1,10.0.0.0/8 (%v)", err)
	}
	return nil
}
