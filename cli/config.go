package cli

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"wabridge/model"
	"wabridge/settings"
)

// settingsError turns a refused key or value into bad usage (exit 2).
func settingsError(err error) error {
	if errors.Is(err, model.ErrUnknownKey) || errors.Is(err, model.ErrInvalid) {
		return usageError{err.Error()}
	}
	return err
}

func runConfigSet(e *env, args []string) error {
	fs, c := newFlags(e, "config set")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("config set: give KEY=VALUE pairs, e.g. wabridge config set bitrix.line_id=7")
	}
	pairs := make([]settings.Pair, 0, len(pos))
	for _, p := range pos {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return usagef("config set: %q is not KEY=VALUE; nothing was written", p)
		}
		pairs = append(pairs, settings.Pair{Name: k, Value: v})
	}
	// Refuse bad input before the database is even opened, so a refused
	// call cannot touch it.
	for _, p := range pairs {
		if err := settings.Validate(p.Name, p.Value); err != nil {
			return usagef("config set: %v; nothing was written", err)
		}
	}
	st, err := e.open(c, openOptions{})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.settings.Set(e.ctx, pairs); err != nil {
		return settingsError(fmt.Errorf("config set: %w", err))
	}
	for _, p := range pairs {
		shown, err := st.settings.Display(e.ctx, p.Name)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s=%s\n", p.Name, shown)
	}
	return nil
}

func runConfigGet(e *env, args []string) error {
	fs, c := newFlags(e, "config get")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("config get: give one KEY, e.g. wabridge config get bitrix.portal_url")
	}
	if _, ok := settings.Lookup(pos[0]); !ok {
		return usagef("config get: unknown setting %q; 'wabridge config list' shows them all", pos[0])
	}
	st, err := e.open(c, openOptions{})
	if err != nil {
		return err
	}
	defer st.Close()
	v, err := st.settings.Display(e.ctx, pos[0])
	if err != nil {
		return settingsError(fmt.Errorf("config get: %w", err))
	}
	fmt.Fprintln(e.stdout, v)
	return nil
}

func runConfigList(e *env, args []string) error {
	fs, c := newFlags(e, "config list")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("config list: takes no arguments")
	}
	st, err := e.open(c, openOptions{})
	if err != nil {
		return err
	}
	defer st.Close()
	entries, err := st.settings.List(e.ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tVALUE\tSOURCE")
	for _, en := range entries {
		v := en.Value
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", en.Name, v, en.Source)
	}
	return tw.Flush()
}
