package certs

// ForceChallenge restricts the Manager to one ACME challenge type, "http-01"
// or "tls-alpn-01", so a test exercises that path for certain; certmagic
// otherwise picks one at random.
func (m *Manager) ForceChallenge(typ string) {
	m.issuer.DisableHTTPChallenge = typ != "http-01"
	m.issuer.DisableTLSALPNChallenge = typ != "tls-alpn-01"
}

// OnLockWait makes every Lock that finds its lock held and starts waiting
// send the lock's name to the returned channel (without blocking), until
// the test ends.
func OnLockWait(t interface{ Cleanup(func()) }) <-chan string {
	ch := make(chan string, 64)
	lockWaiting = func(name string) {
		select {
		case ch <- name:
		default:
		}
	}
	t.Cleanup(func() { lockWaiting = nil })
	return ch
}
