package relay

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"wabridge/bitrix"
	"wabridge/model"
	"wabridge/settings"
)

type leadPayload struct {
	ContactID int64 `json:"contact_id"`
}

const (
	// leadTimeout bounds one CRM check, the waits for the rate limiter
	// included.
	leadTimeout = 5 * time.Minute
	// leadClaimStale is how old a claim must be before another run may take
	// it over; claims older than the process are taken over at once, since
	// the process that made them is gone.
	leadClaimStale = 2 * leadTimeout
	// leadBatch is how many customers one run checks together: two batch
	// calls (lookups, then lead.add) of at most this many commands. A
	// batch counts once against the portal's request limit however many
	// commands it carries, but the portal runs them one after the other
	// within one request, which must finish within 60 s; half the 50
	// allowed keeps a batch of lead.add, with the automation each new lead
	// may start, well inside that.
	leadBatch = 25
)

// prospect is a customer whose CRM check a run has claimed.
type prospect struct {
	id             int64
	phone, profile string
}

// runLead is the job of JobLead, enqueued once, when a customer is first
// seen while crm.lead_mode is bridge. It claims the CRM check of its
// customer, and of other customers waiting for theirs, in one UPDATE, so
// concurrent and repeated runs create at most one lead per number. It looks
// each number up among contacts, companies and leads with
// crm.duplicate.findbycomm (as +E.164 and as digits) and creates a lead only
// when nothing matches; the entity found or created is remembered on the
// customer. Several customers share two batch calls, so a burst of new
// customers costs few requests against the portal's limit; with
// bitrix.webhook_url set the calls go one by one through the webhook, as the
// administrator asked.
//
// A customer's messages do not wait for the check. In bridge mode every
// message goes to Open Lines with disable_crm=Y, so the line's CRM tracker,
// the only thing that links an Open Lines chat to a CRM entity by the
// customer's phone, never runs for them; the lead is found or created
// beside the chat, not through it, and is the same whichever reaches the
// portal first. Holding the first message until the lead exists would
// only delay it. (In line mode the tracker does run, and creates and links
// the entity itself; the bridge makes no lead there.)
//
// A failed check is released and the job fails (at once when every failure
// was permanent), so the queue retries it and the dead-letter list shows
// it. A run that dies between crm.lead.add and recording the lead leaves a
// claim that the next run takes over; it finds the new lead by its phone
// and records it instead of creating a second one.
func (r *Relay) runLead(ctx context.Context, payload []byte) error {
	var p leadPayload
	if err := json.Unmarshal(payload, &p); err != nil || p.ContactID <= 0 {
		return fmt.Errorf("relay: lead job: unreadable payload %q: %w", payload, model.ErrPermanent)
	}
	if mode := r.leadMode(ctx); mode != settings.LeadModeBridge {
		return r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `UPDATE contacts SET lead_state = 'skipped', lead_error = ?, updated_at = ?
				WHERE id = ? AND lead_state IN ('new', 'failed')`, "crm.lead_mode is "+mode, ts(r.now()), p.ContactID)
			return err
		})
	}
	ps, err := r.claimLeads(ctx, p.ContactID)
	if err != nil || len(ps) == 0 {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, leadTimeout)
	defer cancel()

	var failures map[int64]error
	if len(ps) == 1 || r.setting(ctx, settings.BitrixWebhookURL) != "" {
		failures = r.checkOneByOne(ctx, ps)
	} else {
		failures = r.checkBatched(ctx, ps)
	}
	if len(failures) == 0 {
		return nil
	}
	return r.releaseLeads(ctx, failures)
}

// claimLeads claims the check of customer own and of up to leadBatch-1
// others waiting for theirs.
func (r *Relay) claimLeads(ctx context.Context, own int64) ([]prospect, error) {
	now := r.now()
	stale := max(ts(r.started), ts(now.Add(-leadClaimStale)))
	var ps []prospect
	err := r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		ps = ps[:0]
		rows, err := tx.QueryContext(ctx, `UPDATE contacts SET lead_state = 'checking', lead_claimed_at = ?1, updated_at = ?1
			WHERE id IN (SELECT id FROM contacts WHERE id = ?2 OR lead_state = 'new' ORDER BY id = ?2 DESC, id LIMIT ?3)
			  AND (lead_state = 'new' OR (id = ?2 AND lead_state = 'failed') OR (lead_state = 'checking' AND lead_claimed_at < ?4))
			RETURNING id, phone, profile_name`, ts(now), own, leadBatch, stale)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var p prospect
			if err := rows.Scan(&p.id, &p.phone, &p.profile); err != nil {
				return err
			}
			ps = append(ps, p)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, errorf("lead: claim", err)
	}
	return ps, nil
}

// checkOneByOne checks each customer with its own calls.
func (r *Relay) checkOneByOne(ctx context.Context, ps []prospect) map[int64]error {
	failures := map[int64]error{}
	for _, p := range ps {
		dups, err := r.bx.DuplicateFindByComm(ctx, "PHONE", phoneForms(p.phone), "")
		if err != nil {
			failures[p.id] = err
			continue
		}
		if typ, id, ok := knownEntity(dups); ok {
			r.leadRecord(ctx, p, "found", typ, id, failures)
			continue
		}
		id, err := r.bx.LeadAdd(ctx, r.leadFor(ctx, p))
		if err != nil {
			failures[p.id] = err
			continue
		}
		r.leadRecord(ctx, p, "created", "LEAD", id, failures)
	}
	return failures
}

// checkBatched checks the customers with one batch of lookups and one batch
// of lead.add for those not found. The portal runs every command of a
// batch on its own and reports a refused one in result_error, so a
// customer whose command fails is released alone while the others'
// outcomes are recorded.
func (r *Relay) checkBatched(ctx context.Context, ps []prospect) map[int64]error {
	failures := map[int64]error{}
	key := func(prefix string, p prospect) string { return prefix + strconv.FormatInt(p.id, 10) }
	var asked []prospect
	var finds []bitrix.BatchCmd
	for _, p := range ps {
		cmd, err := bitrix.DuplicateFindByCommCmd(key("find", p), "PHONE", phoneForms(p.phone), "")
		if err != nil {
			failures[p.id] = err
			continue
		}
		asked = append(asked, p)
		finds = append(finds, cmd)
	}
	res, err := r.bx.Batch(ctx, finds, false)
	if err != nil {
		for _, p := range asked {
			failures[p.id] = err
		}
		return failures
	}
	var create []prospect
	var adds []bitrix.BatchCmd
	for _, p := range asked {
		dups, err := res.Duplicates(key("find", p))
		if err != nil {
			failures[p.id] = err
			continue
		}
		if typ, id, ok := knownEntity(dups); ok {
			r.leadRecord(ctx, p, "found", typ, id, failures)
			continue
		}
		create = append(create, p)
		adds = append(adds, bitrix.LeadAddCmd(key("add", p), r.leadFor(ctx, p)))
	}
	if len(adds) == 0 {
		return failures
	}
	res, err = r.bx.Batch(ctx, adds, false)
	if err != nil {
		for _, p := range create {
			failures[p.id] = err
		}
		return failures
	}
	for _, p := range create {
		id, err := res.LeadID(key("add", p))
		if err != nil {
			failures[p.id] = err
			continue
		}
		r.leadRecord(ctx, p, "created", "LEAD", id, failures)
	}
	return failures
}

// phoneForms is a number as +E.164 and as digits: how the portal matches
// phone formats is not documented, so the lookup sends both.
func phoneForms(phone string) []string {
	return []string{phone, strings.TrimPrefix(phone, "+")}
}

// leadFor builds the lead of a customer from the crm.* settings.
func (r *Relay) leadFor(ctx context.Context, p prospect) bitrix.Lead {
	opened := true
	name := oneLine(p.profile, 100)
	return bitrix.Lead{
		Title:        strings.TrimSpace("WhatsApp: " + strings.TrimSpace(name+" "+p.phone)),
		Name:         firstNonEmpty(name, p.phone),
		Phone:        []bitrix.Multifield{{Value: p.phone, ValueType: "MOBILE"}},
		SourceID:     r.setting(ctx, settings.CRMLeadSourceID),
		StatusID:     firstNonEmpty(r.setting(ctx, settings.CRMLeadStatusID), "NEW"),
		AssignedByID: parseInt(r.setting(ctx, settings.CRMLeadAssignedByID)),
		Opened:       &opened,
	}
}

// knownEntity picks the CRM entity a number belongs to: a contact first,
// then a company, then a lead.
func knownEntity(d bitrix.Duplicates) (string, int64, bool) {
	for _, typ := range []string{"CONTACT", "COMPANY", "LEAD"} {
		if ids := d[typ]; len(ids) > 0 {
			return typ, ids[0], true
		}
	}
	return "", 0, false
}

// leadRecord stores the outcome of one customer's check; a failure to
// store it is kept in failures.
func (r *Relay) leadRecord(ctx context.Context, p prospect, state, typ string, id int64, failures map[int64]error) {
	err := r.write(context.WithoutCancel(ctx), func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE contacts SET lead_state = ?, crm_entity_type = ?, crm_entity_id = ?, lead_error = '', updated_at = ?
			WHERE id = ?`, state, typ, id, ts(r.now()), p.id)
		return err
	})
	if err != nil {
		failures[p.id] = errorf("lead: record", err)
		return
	}
	if state == "created" {
		r.log.Info("lead created", "contact_id", p.id, "lead_id", id)
	} else {
		r.log.Info("customer known to the CRM; no lead created", "contact_id", p.id, "crm_entity_type", typ, "crm_entity_id", id)
	}
}

// releaseLeads puts failed checks back to waiting and returns the job's
// error: permanent (a dead letter at once) when no failure may pass.
func (r *Relay) releaseLeads(ctx context.Context, failures map[int64]error) error {
	permanent := true
	var reasons []string
	now := ts(r.now())
	err := r.write(context.WithoutCancel(ctx), func(ctx context.Context, tx *sql.Tx) error {
		for id, cause := range failures {
			if bitrix.IsRetryable(cause) || errors.Is(cause, bitrix.ErrReinstall) || errors.Is(cause, bitrix.ErrNoGrant) {
				permanent = false
			}
			if _, err := tx.ExecContext(ctx, `UPDATE contacts SET lead_state = 'new', lead_error = ?, updated_at = ?
				WHERE id = ? AND lead_state = 'checking'`, bitrix.Reason(cause), now, id); err != nil {
				return err
			}
		}
		return nil
	})
	var first error
	for id, cause := range failures {
		reasons = append(reasons, fmt.Sprintf("customer %d: %s", id, bitrix.Reason(cause)))
		if first == nil {
			first = cause
		}
	}
	msg := "relay: CRM check failed for " + strings.Join(reasons, "; ")
	if err != nil {
		return errors.Join(errors.New(msg), errorf("lead: release claims", err))
	}
	if permanent {
		return fmt.Errorf("%s: %w", msg, model.ErrPermanent)
	}
	return fmt.Errorf("%s: %w", msg, first)
}

// LeadConflict reports whether the bridge and the Open Line would both
// create CRM entities for new customers: crm.lead_mode is bridge and a line
// the bridge delivers to has its own CRM handling on (CRM = Y) with
// CRM_CREATE other than "none" (lead, deal, or a value not reported). It
// reads imopenlines.config.get for every line in use; with no line
// configured, or in modes line and off, there is no conflict.
func (r *Relay) LeadConflict(ctx context.Context) (bool, error) {
	if r.leadMode(ctx) != settings.LeadModeBridge {
		return false, nil
	}
	lines := map[int64]bool{}
	if l := parseInt(r.setting(ctx, settings.BitrixLineID)); l > 0 {
		lines[l] = true
	}
	rows, err := r.db.R.QueryContext(ctx, `SELECT DISTINCT line_id FROM channels WHERE from_settings = 0 AND line_id > 0`)
	if err != nil {
		return false, errorf("lead conflict: list lines", err)
	}
	for rows.Next() {
		var l int64
		if err := rows.Scan(&l); err != nil {
			rows.Close()
			return false, errorf("lead conflict: list lines", err)
		}
		lines[l] = true
	}
	rows.Close()
	for l := range lines {
		cfg, err := r.bx.OpenLinesConfigGet(ctx, l)
		if errors.Is(err, bitrix.ErrLineNotFound) {
			continue
		}
		if err != nil {
			return false, errorf("lead conflict", err)
		}
		if cfg.CRM && !strings.EqualFold(strings.TrimSpace(cfg.CRMCreate), "none") {
			return true, nil
		}
	}
	return false, nil
}
