// Package bitrix owns everything wabridge says to and hears from a Bitrix24
// portal: the REST client with its OAuth grant (refresh, single-flight,
// re-install detection), the leaky-bucket pacing that keeps the bridge under
// the portal's request limit, batching, the typed imconnector, event, CRM,
// chat and Open Lines calls, and the parsing of what Bitrix POSTs to the
// bridge: events and install requests in PHP's nested form encoding, with
// redaction of the tokens they carry and the application_token gate.
//
// The package is a leaf: it knows nothing of the database or the other parts
// of wabridge. The caller persists the grant (sealed) through GrantStore and
// supplies settings through getter functions, so changed settings take
// effect without rebuilding the client.
package bitrix
