// Package whatsapp owns everything wabridge says to and hears from the Meta
// WhatsApp Cloud API: a Graph API client (phone number node, media info,
// download and upload, sending messages, read receipts), the types of the
// webhook envelope with every inbound message and status shape, the
// X-Hub-Signature-256 check and the subscription handshake, and the mapping
// of Graph error codes to retry decisions and plain-words reasons.
//
// A failure that passes within seconds and that Meta certainly did not
// carry out (a 5xx with a passing code, a rate limit, a refused
// connection) is retried within the call, a few times and briefly; every
// other failure goes back to the caller, whose schedule owns longer
// waits and any second send whose first may have gone out.
//
// The package is a leaf: it uses the standard library only and knows
// nothing of the database or of Bitrix24. Tokens are fetched through a
// function on every call so that a token changed in the settings takes
// effect without a restart. Nothing in this package ever logs a token or an
// app secret.
package whatsapp
