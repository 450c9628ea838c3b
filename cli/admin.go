package cli

import (
	"fmt"

	"wabridge/handlers"
)

// runAdminTOTPReset forgets the console's authenticator secret, for when
// the phone with the authenticator app is lost. Signed-in browsers are
// signed out with it; the admin token stays as it is.
func runAdminTOTPReset(e *env, args []string) error {
	fs, c := newFlags(e, "admin totp-reset")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("admin totp-reset: takes no arguments")
	}
	st, _, err := e.openQuiet(c)
	if err != nil {
		return err
	}
	defer st.Close()
	existed, err := handlers.ForgetTOTP(e.ctx, st.settings)
	if err != nil {
		return fmt.Errorf("admin totp-reset: %w", err)
	}
	if existed {
		fmt.Fprintln(e.stdout, "The console's authenticator app is forgotten, and every signed-in browser is signed out.")
	} else {
		fmt.Fprintln(e.stdout, "No authenticator app was set up; nothing to forget.")
	}
	fmt.Fprintln(e.stdout, "At the next sign-in, after the admin token, the console shows a new QR code: scan it with the authenticator app and enter its code.")
	return nil
}
