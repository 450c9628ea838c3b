package bitrix

import "crypto/subtle"

// GateDecision is what TokenGate decides about an incoming event.
type GateDecision int

const (
	// GateReject: the event's application_token does not match; answer 403.
	GateReject GateDecision = iota
	// GateAccept: the token matches the stored one.
	GateAccept
	// GateBootstrap: no token is stored yet and the event comes from the
	// installed portal; accept it and store its token as the expected one.
	GateBootstrap
)

// String returns "reject", "accept" or "bootstrap".
func (d GateDecision) String() string {
	switch d {
	case GateAccept:
		return "accept"
	case GateBootstrap:
		return "bootstrap"
	}
	return "reject"
}

// TokenGate decides whether an event really comes from the installed
// application by its auth[application_token]. It holds no state and does no
// storage: the caller passes what it has stored and stores the token itself
// on GateBootstrap.
type TokenGate struct {
	// Expected is the stored application_token; empty until bootstrapped.
	Expected string
	// GrantMemberID is the member_id of the installed grant; empty when the
	// application is not installed.
	GrantMemberID string
}

// Check reports whether got equals expected, in constant time. An empty
// expected or got never matches.
func (TokenGate) Check(expected, got string) bool {
	if expected == "" || got == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(expected), []byte(got)) == 1
}

// Decide applies the gate to an event's application token and member id.
// With a token stored, only that token is accepted. Without one, the first
// event whose member_id matches the installed grant's member_id (and that
// carries a token) is accepted and supplies the token: the install POST of
// a UI application carries the token, but the ONAPPINSTALL callback can
// arrive late or not at all, and the member_id is the only other proof of
// origin the bridge holds.
func (g TokenGate) Decide(gotToken, gotMemberID string) GateDecision {
	if g.Expected != "" {
		if g.Check(g.Expected, gotToken) {
			return GateAccept
		}
		return GateReject
	}
	if gotToken != "" && g.Check(g.GrantMemberID, gotMemberID) {
		return GateBootstrap
	}
	return GateReject
}

// DecideEvent applies Decide to an event's auth block.
func (g TokenGate) DecideEvent(a EventAuth) GateDecision {
	return g.Decide(a.ApplicationToken, a.MemberID)
}
