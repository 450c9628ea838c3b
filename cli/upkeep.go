package cli

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"wabridge/bitrix"
	"wabridge/scheduler"
	"wabridge/settings"
	"wabridge/whatsapp"
)

// upkeep holds the periodic checks serve runs and what they last found,
// for /health.
type upkeep struct {
	settings  *settings.Store
	portal    *bitrix.Client
	wa        *whatsapp.Client
	connector atomic.Value // string: active, inactive or unknown
	metaToken atomic.Value // string: ok, invalid or unknown
	// retention is the daily clean-up; serve sets it before schedule.
	retention *retention
	// leads reports whether the Open Line's own CRM settings also create
	// leads while crm.lead_mode is bridge; serve sets it.
	leads        func(ctx context.Context) (bool, error)
	leadConflict atomic.Bool
}

func newUpkeep(s *settings.Store, portal *bitrix.Client, wa *whatsapp.Client) *upkeep {
	u := &upkeep{settings: s, portal: portal, wa: wa}
	u.connector.Store("unknown")
	u.metaToken.Store("unknown")
	return u
}

// schedule adds the upkeep jobs.
func (u *upkeep) schedule(s *scheduler.Scheduler) error {
	return errors.Join(
		// Access tokens live an hour; checking every 10 minutes and
		// refreshing 20 minutes ahead keeps one valid without refreshing
		// more often than Bitrix24 tolerates.
		s.Every("bitrix_grant_refresh", 10*time.Minute, u.refreshGrant, scheduler.RunAtStart()),
		s.Every("bitrix_connector_check", 15*time.Minute, u.checkConnector, scheduler.RunAtStart()),
		s.Daily("meta_token_check", 4, 0, u.checkMetaToken, scheduler.RunAtStart()),
		// bitrix.rate_per_sec and rate_burst change the running bucket
		// rather than replacing it: its level must carry over.
		s.Every("bitrix_rate_limit", 30*time.Second, u.applyRateLimit),
		// At 03:00, when few customers write, and not at start: the first
		// run may compact the database once, which holds up writers for
		// a few seconds.
		s.Daily("retention_prune", 3, 0, u.prune, scheduler.Timeout(retentionTimeout)),
	)
}

func (u *upkeep) refreshGrant(ctx context.Context) (string, error) {
	if u.portal.GrantState() == bitrix.GrantMissing {
		return "not installed", nil
	}
	refreshed, err := u.portal.RefreshIfExpiring(ctx, 20*time.Minute)
	switch {
	case errors.Is(err, bitrix.ErrReinstall):
		return "", errors.New("the portal refused the grant: re-install the Bitrix24 application")
	case err != nil:
		return "", errors.New(bitrix.Reason(err))
	case refreshed:
		return "refreshed", nil
	}
	return "not due", nil
}

func (u *upkeep) checkConnector(ctx context.Context) (string, error) {
	if u.portal.GrantState() == bitrix.GrantMissing {
		u.connector.Store("unknown")
		return "not installed", nil
	}
	lineText, err := u.settings.Get(ctx, settings.BitrixLineID)
	if err != nil || lineText == "" {
		u.connector.Store("unknown")
		return "no line configured", nil
	}
	line, _ := strconv.ParseInt(lineText, 10, 64)
	conn, err := u.settings.Get(ctx, settings.BitrixConnectorID)
	if err != nil {
		return "", err
	}
	st, err := u.portal.Status(ctx, conn, line)
	if err != nil {
		return "", errors.New(bitrix.Reason(err))
	}
	if st.Status && st.Configured {
		u.connector.Store("active")
		if u.checkLeads(ctx) {
			return "active; the Open Line's own CRM settings also create leads", nil
		}
		return "active", nil
	}
	u.connector.Store("inactive")
	return fmt.Sprintf("inactive on line %d", line), nil
}

// checkLeads looks whether the bridge and the Open Line would both create
// leads, remembers it for /health and returns it. A failed look keeps what
// was known.
func (u *upkeep) checkLeads(ctx context.Context) bool {
	if u.leads == nil {
		return false
	}
	conflict, err := u.leads(ctx)
	if err != nil {
		return u.leadConflict.Load()
	}
	u.leadConflict.Store(conflict)
	return conflict
}

func (u *upkeep) checkMetaToken(ctx context.Context) (string, error) {
	pnid, _ := u.settings.Get(ctx, settings.MetaPhoneNumberID)
	tok, _ := u.settings.Get(ctx, settings.MetaAccessToken)
	if pnid == "" || tok == "" {
		u.metaToken.Store("unknown")
		return "not configured", nil
	}
	if _, err := u.wa.PhoneNumber(ctx, pnid); err != nil {
		if whatsapp.IsAuth(err) {
			u.metaToken.Store("invalid")
		}
		return "", errors.New(whatsapp.Explain(err))
	}
	u.metaToken.Store("ok")
	return "ok", nil
}

// prune is the retention_prune job: "deleted N audit rows, M files (X MB),
// cleared K messages; freed Y MB".
func (u *upkeep) prune(ctx context.Context) (string, error) {
	if u.retention == nil {
		return "", errors.New("retention is not set up in this process")
	}
	return u.retention.job(ctx)
}

func (u *upkeep) connectorState(context.Context) string { return u.connector.Load().(string) }
func (u *upkeep) metaTokenState(context.Context) string { return u.metaToken.Load().(string) }

func (u *upkeep) applyRateLimit(ctx context.Context) (string, error) {
	rate, burst := rateSettings(ctx, u.settings)
	l := u.portal.Limiter()
	if l.Rate() == rate && l.Burst() == burst {
		return "unchanged", nil
	}
	if err := l.SetRate(rate, burst); err != nil {
		return "", err
	}
	return fmt.Sprintf("now %g requests per second, burst %d", rate, burst), nil
}
