package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"wabridge/bitrix"
	"wabridge/connect"
	"wabridge/settings"
	"wabridge/whatsapp"
)

// openQuiet opens the data folder for a command whose output is its
// result: its logger reports only warnings and errors, on stderr.
func (e *env) openQuiet(c *common) (*store, *slog.Logger, error) {
	log, err := e.newLogger(c.logFormat, slog.LevelWarn)
	if err != nil {
		return nil, nil, err
	}
	st, err := e.open(c, openOptions{log: log})
	if err != nil {
		return nil, nil, err
	}
	return st, log, nil
}

func runRegisterConnector(e *env, args []string) error {
	fs, c := newFlags(e, "bitrix register-connector")
	fresh := fs.Bool("fresh", false, "unregister the connector and unbind its events first")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("bitrix register-connector: takes no arguments, only --fresh")
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
	if pub == "" {
		return errors.New("bitrix register-connector: app.public_url is not set: wabridge config set app.public_url=https://your-bridge.example.com")
	}
	connector, err := st.settings.Get(ctx, settings.BitrixConnectorID)
	if err != nil {
		return err
	}
	client, err := newBitrix(ctx, st.settings, log, nil)
	if err != nil {
		return err
	}
	// The console's "Register connector" button runs the same function.
	err = connect.Register(ctx, client, connect.Options{
		PublicURL: pub,
		Connector: connector,
		Fresh:     *fresh,
		Progress:  func(line string) { fmt.Fprintln(e.stdout, line) },
	})
	if err != nil {
		return fmt.Errorf("bitrix register-connector: %w", err)
	}
	fmt.Fprintln(e.stdout, "next: in Bitrix24 Contact Center, click WhatsApp and connect it to an Open Channel")
	return nil
}

func runActivateConnector(e *env, args []string) error {
	fs, c := newFlags(e, "bitrix activate-connector")
	lineFlag := fs.String("line", "", "Open Channel (line) id; default bitrix.line_id")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("bitrix activate-connector: takes no arguments, only --line=ID")
	}
	if *lineFlag != "" {
		if err := settings.Validate(settings.BitrixLineID, *lineFlag); err != nil {
			return usagef("bitrix activate-connector: --line: %v", err)
		}
	}
	st, log, err := e.openQuiet(c)
	if err != nil {
		return err
	}
	defer st.Close()
	ctx := e.ctx
	lineText := *lineFlag
	if lineText == "" {
		if lineText, err = st.settings.Get(ctx, settings.BitrixLineID); err != nil {
			return err
		}
	}
	if lineText == "" {
		return usagef("bitrix activate-connector: no line: pass --line=ID or set bitrix.line_id")
	}
	line, _ := strconv.ParseInt(lineText, 10, 64)
	connector, err := st.settings.Get(ctx, settings.BitrixConnectorID)
	if err != nil {
		return err
	}
	pub, _ := st.settings.Get(ctx, settings.AppPublicURL)
	client, err := newBitrix(ctx, st.settings, log, nil)
	if err != nil {
		return err
	}
	if err := client.Activate(ctx, connector, line, true); err != nil {
		return fmt.Errorf("bitrix activate-connector: %s", bitrix.Reason(err))
	}
	// activate wipes the connector's data, so it is written after.
	if err := client.ConnectorDataSet(ctx, connector, line, bitrix.ConnectorData{
		ID: connector + "_line_" + lineText, URL: pub, URLIM: pub, Name: bitrix.DefaultConnectorName,
	}); err != nil {
		return fmt.Errorf("bitrix activate-connector: %s", bitrix.Reason(err))
	}
	status, err := client.Status(ctx, connector, line)
	if err != nil {
		return fmt.Errorf("bitrix activate-connector: %s", bitrix.Reason(err))
	}
	fmt.Fprintf(e.stdout, "STATUS: %t\nCONFIGURED: %t\n", status.Status, status.Configured)
	if !status.Status || !status.Configured {
		return fmt.Errorf("bitrix activate-connector: the connector is not ready on line %d; connect it to the Open Channel in Contact Center, then run this again", line)
	}
	if *lineFlag != "" {
		if err := st.settings.Set(ctx, []settings.Pair{{Name: settings.BitrixLineID, Value: lineText}}); err != nil {
			return err
		}
	}
	return nil
}

func runCheckToken(e *env, args []string) error {
	fs, c := newFlags(e, "whatsapp check-token")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("whatsapp check-token: takes no arguments")
	}
	st, log, err := e.openQuiet(c)
	if err != nil {
		return err
	}
	defer st.Close()
	ctx := e.ctx
	pnid, err := st.settings.Get(ctx, settings.MetaPhoneNumberID)
	if err != nil {
		return err
	}
	if pnid == "" {
		return errors.New("whatsapp check-token: meta.phone_number_id is not set: wabridge config set meta.phone_number_id=…")
	}
	if tok, err := st.settings.Get(ctx, settings.MetaAccessToken); err != nil || tok == "" {
		return errors.New("whatsapp check-token: meta.access_token is not set: wabridge config set meta.access_token=…")
	}
	client, err := newWhatsApp(ctx, st.settings, log, nil)
	if err != nil {
		return err
	}
	if _, err := client.PhoneNumber(ctx, pnid); err != nil {
		var ae *whatsapp.APIError
		if errors.As(err, &ae) {
			return fmt.Errorf("whatsapp check-token: Meta error %d: %s — %s", ae.Code, ae.Message, ae.Reason())
		}
		return fmt.Errorf("whatsapp check-token: %s", whatsapp.Explain(err))
	}
	fmt.Fprintln(e.stdout, "OK — token is valid.")
	return nil
}
