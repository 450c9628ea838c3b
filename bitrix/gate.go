package bitrix

import "crypto/subtle"

// GateDecision is what TokenGate decides about an incoming event.
type GateDecision int

const (
	// GateReject: the event's application_token does not match; answer 403.
	GateReject GateDecision = iota
	// GateAccept: the token matches the stored one.
	GateAccept
	// GateBootstrap: no token is stored yet and the event names the
	// installed portal. It is only a candidate: the caller must have the
	// configured portal confirm the event's auth[access_token] (app.info,
	// and the application's code) before it accepts the event and stores
	// its application_token; otherwise it rejects it.
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
// application by its auth[application_token]. It holds no state, does no
// storage and calls nobody: the caller passes what it has stored, verifies
// a GateBootstrap candidate with the portal and stores the token itself.
type TokenGate struct {
	// Expected is the stored application_token; empty until learned.
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

// Decide applies the gate to an event's application token, member id and
// access token. With a token stored, only that token is accepted. Without
// one, an event whose member_id matches the installed grant's and that
// carries both an application token and an access token is a GateBootstrap
// candidate. The member_id is no secret, so it only narrows the candidates:
// the access token, checked with the portal, is the proof.
func (g TokenGate) Decide(gotToken, gotMemberID, accessToken string) GateDecision {
	if g.Expected != "" {
		if g.Check(g.Expected, gotToken) {
			return GateAccept
		}
		return GateReject
	}
	if gotToken != "" && accessToken != "" && g.Check(g.GrantMemberID, gotMemberID) {
		return GateBootstrap
	}
	return GateReject
}

// DecideEvent applies Decide to an event's auth block.
func (g TokenGate) DecideEvent(a EventAuth) GateDecision {
	return g.Decide(a.ApplicationToken, a.MemberID, a.AccessToken)
}
