package cli

import (
	"fmt"
	"strconv"
	"time"

	"wabridge/queue"
	"wabridge/relay"
)

func runReplay(e *env, args []string) error {
	fs, c := newFlags(e, "replay")
	id := fs.String("id", "", "one stored webhook call, by its audit id")
	since := fs.String("since", "", "calls received within this long, e.g. 2h or 30m")
	source := fs.String("source", "", "whatsapp or bitrix (default: every source)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("replay: takes only --id, --since and --source")
	}
	var f relay.ReplayFilter
	if *id != "" {
		if f.ID, err = strconv.ParseInt(*id, 10, 64); err != nil || f.ID <= 0 {
			return usagef("replay: --id %q is not an audit id (a positive number)", *id)
		}
	}
	if *since != "" {
		if f.Since, err = time.ParseDuration(*since); err != nil || f.Since <= 0 {
			return usagef("replay: --since %q is not a duration like 2h or 30m", *since)
		}
	}
	switch *source {
	case "", "whatsapp", "bitrix":
		f.Source = *source
	default:
		return usagef("replay: --source %q: use whatsapp or bitrix", *source)
	}
	if f.ID == 0 && f.Since == 0 {
		return usagef("replay: say what to replay: --id N or --since DURATION")
	}
	st, log, err := e.openQuiet(c)
	if err != nil {
		return err
	}
	defer st.Close()
	portal, err := newBitrix(e.ctx, st.settings, log, nil)
	if err != nil {
		return err
	}
	wa, err := newWhatsApp(e.ctx, st.settings, log, nil)
	if err != nil {
		return err
	}
	// The jobs replay enqueues are run by the server's workers.
	q := queue.New(queue.Options{DB: st.db, Log: log})
	rl := newRelay(st, nil, q, portal, wa, log, nil, nil)
	n, err := rl.Replay(e.ctx, f, func(done, total int) {
		fmt.Fprintf(e.stdout, "replay: %d of %d\n", done, total)
	})
	if err != nil {
		return settingsError(fmt.Errorf("replay: %w", err))
	}
	fmt.Fprintf(e.stdout, "replay: %d stored calls processed again; messages already relayed were skipped. The running server sends what is new within a minute.\n", n)
	return nil
}
