package cli

import (
	"errors"
	"fmt"
	"strings"

	"wabridge/connect"
	"wabridge/settings"
)

// runWhatsAppConnect finds and configures Meta's side from meta.app_id,
// meta.app_secret and meta.access_token. It prints one line per step; with
// several numbers and none chosen it lists them and writes nothing. The
// setup page's "Connect" button runs the same function.
func runWhatsAppConnect(e *env, args []string) error {
	fs, c := newFlags(e, "whatsapp connect")
	pnid := fs.String("phone-number-id", "", "the phone number id to use when the token reaches several")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("whatsapp connect: takes no arguments, only --phone-number-id=ID")
	}
	if *pnid != "" {
		if err := settings.Validate(settings.MetaPhoneNumberID, *pnid); err != nil {
			return usagef("whatsapp connect: --phone-number-id: %v", err)
		}
	}
	st, log, err := e.openQuiet(c)
	if err != nil {
		return err
	}
	defer st.Close()
	ctx := e.ctx
	pub, err := st.settings.Get(ctx, settings.AppPublicURL)
	if err != nil {
		return err
	}
	client, err := newWhatsApp(ctx, st.settings, log, nil)
	if err != nil {
		return err
	}
	_, err = connect.ConnectMeta(ctx, client, st.settings, connect.MetaOptions{
		PublicURL:     pub,
		PhoneNumberID: *pnid,
		Progress:      func(s connect.MetaStep) { fmt.Fprintln(e.stdout, s.Line()) },
	})
	var choice *connect.ChoiceError
	if errors.As(err, &choice) {
		for _, n := range choice.Numbers {
			fmt.Fprintln(e.stdout, n.Line())
		}
		return fmt.Errorf("whatsapp connect: %w", err)
	}
	if err != nil {
		return fmt.Errorf("whatsapp connect: %s", strings.TrimSuffix(err.Error(), "."))
	}
	fmt.Fprintln(e.stdout, "next: send a WhatsApp message to the business number; it arrives in the Open Channel")
	return nil
}
