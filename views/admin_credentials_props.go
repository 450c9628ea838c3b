package views

// ReinstallProps is the Bitrix24 re-install part of the settings page: a
// window started there lets one installation come from another portal than
// bitrix.portal_url.
type ReinstallProps struct {
	// Portal is bitrix.portal_url, "" before the first installation.
	Portal string
	// Open reports a window now open, until Until (already formatted).
	Open  bool
	Until string
	// Minutes is how long a window stays open.
	Minutes int
}
