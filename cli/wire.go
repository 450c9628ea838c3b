package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"wabridge/bitrix"
	"wabridge/db"
	"wabridge/model"
	"wabridge/queue"
	"wabridge/relay"
	"wabridge/settings"
	"wabridge/whatsapp"
)

// grantName is the internal sealed value that holds the Bitrix OAuth grant.
const grantName = "bitrix.grant"

// grantStore keeps the Bitrix OAuth grant sealed in the settings table.
type grantStore struct{ s *settings.Store }

func (g grantStore) Load(ctx context.Context) (bitrix.Grant, error) {
	b, err := g.s.GetSealed(ctx, grantName)
	if errors.Is(err, model.ErrNotFound) {
		return bitrix.Grant{}, bitrix.ErrNoGrant
	}
	if err != nil {
		return bitrix.Grant{}, fmt.Errorf("load bitrix grant: %w", err)
	}
	var gr bitrix.Grant
	if err := json.Unmarshal(b, &gr); err != nil {
		return bitrix.Grant{}, fmt.Errorf("load bitrix grant: %w", err)
	}
	return gr, nil
}

func (g grantStore) Save(ctx context.Context, gr bitrix.Grant) error {
	b, err := json.Marshal(gr)
	if err != nil {
		return fmt.Errorf("save bitrix grant: %w", err)
	}
	if err := g.s.SetSealed(ctx, grantName, b); err != nil {
		return fmt.Errorf("save bitrix grant: %w", err)
	}
	return nil
}

// Forget deletes the stored grant, after the application was uninstalled.
func (g grantStore) Forget(ctx context.Context) error {
	if err := g.s.DeleteSealed(ctx, grantName); err != nil {
		return fmt.Errorf("forget bitrix grant: %w", err)
	}
	return nil
}

// setting returns a getter that reads name from the settings at each call,
// so a changed value applies without a restart.
func setting(s *settings.Store, name string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) { return s.Get(ctx, name) }
}

// newBitrix builds the portal client with the configured rate limit; the
// bitrix_rate_limit job applies a changed one to the running bucket.
func newBitrix(ctx context.Context, s *settings.Store, log *slog.Logger, observe func(string, int, time.Duration)) (*bitrix.Client, error) {
	rate, burst := rateSettings(ctx, s)
	return bitrix.New(bitrix.Options{
		ClientID:     setting(s, settings.BitrixClientID),
		ClientSecret: setting(s, settings.BitrixClientSecret),
		OAuthURL:     setting(s, settings.BitrixOAuthURL),
		PortalURL:    setting(s, settings.BitrixPortalURL),
		WebhookURL:   setting(s, settings.BitrixWebhookURL),
		Grants:       grantStore{s},
		RatePerSec:   rate,
		Burst:        burst,
		Logger:       log.With("component", "bitrix"),
		Observe:      observe,
	}), nil
}

// rateSettings reads the portal's rate limit, with the defaults for values
// that are unset or unreadable.
func rateSettings(ctx context.Context, s *settings.Store) (float64, int) {
	rate, burst := bitrix.DefaultRatePerSec, bitrix.DefaultBurst
	if v, err := s.Get(ctx, settings.BitrixRatePerSec); err == nil && v != "" {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			rate = f
		}
	}
	if v, err := s.Get(ctx, settings.BitrixRateBurst); err == nil && v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			burst = n
		}
	}
	return rate, burst
}

// newWhatsApp builds the Graph client. meta.graph_url and the access token
// are read at every call, so changed settings apply at once.
func newWhatsApp(ctx context.Context, s *settings.Store, log *slog.Logger, observe func(string, int, time.Duration)) (*whatsapp.Client, error) {
	base, err := s.Get(ctx, settings.MetaGraphURL)
	if err != nil {
		return nil, err
	}
	if base == "" {
		base = settings.DefaultMetaGraphURL
	}
	return whatsapp.New(whatsapp.Options{
		BaseURL:     base,
		BaseURLFunc: setting(s, settings.MetaGraphURL),
		Token:       setting(s, settings.MetaAccessToken),
		Logger:      log.With("component", "whatsapp"),
		Observe:     observe,
	}), nil
}

// newRelay builds the relay on the opened store; w and onMetaToken may be
// nil outside serve.
func newRelay(st *store, w *db.Writer, q *queue.Queue, portal *bitrix.Client, wa *whatsapp.Client, log *slog.Logger, onMetaToken func(string), onRelayed func(string, time.Duration)) *relay.Relay {
	return relay.New(relay.Options{
		DB:          st.db,
		Writer:      w,
		Queue:       q,
		Config:      st.settings,
		WhatsApp:    wa,
		Bitrix:      portal,
		Grants:      grantStore{st.settings},
		OnMetaToken: onMetaToken,
		OnRelayed:   onRelayed,
		Log:         log,
	})
}
