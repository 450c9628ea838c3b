package cli

import (
	"fmt"

	"wabridge/certs"
	"wabridge/secret"
	"wabridge/settings"
)

func runKeysRotate(e *env, args []string) error {
	fs, c := newFlags(e, "keys rotate")
	newKeyFile := fs.String("new-key-file", "", "file holding the new master key (base64 of 32 bytes)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *newKeyFile == "" {
		return usagef("keys rotate: give --new-key-file FILE (create one with: head -c32 /dev/urandom | base64 > FILE; chmod 600 FILE)")
	}
	newKey, err := secret.LoadKeyFile(*newKeyFile)
	if err != nil {
		return usagef("keys rotate: --new-key-file: %v", err)
	}
	st, err := e.open(c, openOptions{})
	if err != nil {
		return err
	}
	defer st.Close()
	if st.key.Fingerprint() == newKey.Fingerprint() {
		return usagef("keys rotate: the new key is the key already in use (%s)", newKey.Fingerprint())
	}
	n, err := settings.Rotate(e.ctx, st.db, st.key, newKey, certs.Reseal)
	if err != nil {
		return fmt.Errorf("keys rotate: %w; nothing was changed", err)
	}
	fmt.Fprintf(e.stdout, "keys rotate: re-sealed %d secrets under %s (was %s)\n", n, newKey.Fingerprint(), st.key.Fingerprint())
	fmt.Fprintln(e.stdout, "keys rotate: now restart wabridge with the new key (WABRIDGE_MASTER_KEY or --key-file); the old key is refused from now on")
	return nil
}
