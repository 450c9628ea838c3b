package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"wabridge/model"
	"wabridge/settings"
	"wabridge/views"
)

// settingGroups are the fieldsets of the settings form, in order.
var settingGroups = []struct {
	group, title, intro string
}{
	{settings.GroupMeta, "WhatsApp (Meta)", "From your app in the Meta developer dashboard. The manual's Setup page says where each value is."},
	{settings.GroupBitrix, "Bitrix24", "From the local application you created in Bitrix24. The Open Channel and the event token are filled in by themselves."},
	{settings.GroupCRM, "CRM leads", "Whether and how the bridge creates leads for new customers."},
	{settings.GroupRelay, "Delivery", "How operators' replies look on WhatsApp, and how long the bridge keeps trying before a message is listed under Failed messages."},
	{settings.GroupRetention, "Keeping records", "How long received calls and files are kept."},
	{settings.GroupApp, "The bridge's address", "Usually right by itself; change it only if the bridge is reached under another address, for example behind a proxy."},
	{settings.GroupAdmin, "Console", "The admin token is the password of this console. A new one signs out every other browser, and stops the old one from opening /metrics."},
}

// settingLabels names each setting in plain words; the key is shown too,
// since the manual and the command line use it.
var settingLabels = map[string]string{
	settings.AppPublicURL:           "Public address",
	settings.AppTrustedProxies:      "Trusted proxies",
	settings.AdminToken:             "Admin token",
	settings.MetaAppID:              "App ID",
	settings.MetaAppSecret:          "App secret",
	settings.MetaAccessToken:        "Access token",
	settings.MetaPhoneNumberID:      "Phone number ID",
	settings.MetaWABAID:             "WhatsApp Business Account ID",
	settings.MetaVerifyToken:        "Verify token",
	settings.MetaGraphURL:           "Graph API address",
	settings.BitrixPortalURL:        "Portal address",
	settings.BitrixClientID:         "Application ID (client_id)",
	settings.BitrixClientSecret:     "Application key (client_secret)",
	settings.BitrixOAuthURL:         "OAuth server",
	settings.BitrixWebhookURL:       "Inbound webhook URL",
	settings.BitrixConnectorID:      "Connector id",
	settings.BitrixRatePerSec:       "Calls per second",
	settings.BitrixRateBurst:        "Burst of calls",
	settings.BitrixLineID:           "Open Channel id",
	settings.BitrixApplicationToken: "Event token",
	settings.CRMLeadMode:            "Who creates leads",
	settings.CRMLeadStatusID:        "Status of new leads",
	settings.CRMLeadSourceID:        "Source of new leads",
	settings.CRMLeadAssignedByID:    "Responsible user of new leads",
	settings.RelayRetrySchedule:     "Waits between attempts",
	settings.RetentionDays:          "Days to keep",
	settings.RelayOperatorName:      "Operator's name in replies",
}

// settingChoices are the settings with a fixed set of values.
var settingChoices = map[string][]string{
	settings.CRMLeadMode:       {settings.LeadModeBridge, settings.LeadModeLine, settings.LeadModeOff},
	settings.RelayOperatorName: {settings.OperatorNameShow, settings.OperatorNameHide},
}

// credentialsForm builds the form from the stored settings; submitted and
// errs, when set, replace the shown values and add the reasons.
func (s *Server) credentialsForm(ctx context.Context, submitted map[string]string, errs map[string]string) ([]views.SettingGroup, error) {
	entries, err := s.settings.List(ctx)
	if err != nil {
		return nil, err
	}
	byGroup := map[string][]views.SettingField{}
	for _, e := range entries {
		f := views.SettingField{
			Name: e.Name, Label: settingLabels[e.Name], Help: e.Help, Secret: e.Secret,
			Set: e.Source != settings.SourceUnset, Default: e.Default, Source: e.Source,
			Choices: settingChoices[e.Name], Error: errs[e.Name],
		}
		if f.Label == "" {
			f.Label = e.Name
		}
		if !e.Secret {
			f.Value = e.Value
			if v, ok := submitted[e.Name]; ok {
				f.Value = v
			}
		}
		byGroup[e.Group] = append(byGroup[e.Group], f)
	}
	var out []views.SettingGroup
	for _, g := range settingGroups {
		if len(byGroup[g.group]) == 0 {
			continue
		}
		out = append(out, views.SettingGroup{ID: "group-" + g.group, Title: g.title, Intro: g.intro, Fields: byGroup[g.group]})
	}
	return out, nil
}

// credentialsPage shows the settings form.
func (s *Server) credentialsPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	groups, err := s.credentialsForm(ctx, nil, nil)
	if err != nil {
		s.log.Error("console: settings", "err", err, "request_id", RequestID(ctx))
		s.errorPage(w, r, http.StatusInternalServerError, "")
		return
	}
	s.render(w, r, http.StatusOK, views.Credentials(views.CredentialsProps{
		Console: s.console(r, "Settings", views.AdminCredentials), Groups: groups,
		Reinstall: s.reinstallProps(ctx),
	}))
}

// reinstallWindow is how long a re-install started in the console stays
// open for an installation from another portal.
const reinstallWindow = 30 * time.Minute

// reinstallName is the internal value that records an open re-install
// window.
const reinstallName = "bitrix.reinstall"

// reinstallRecord is the stored window.
type reinstallRecord struct {
	Started time.Time `json:"started"`
	Until   time.Time `json:"until"`
}

// openReinstall returns the open re-install window, if any.
func (s *Server) openReinstall(ctx context.Context) (reinstallRecord, bool) {
	b, err := s.settings.GetSealed(ctx, reinstallName)
	if err != nil {
		if !errors.Is(err, model.ErrNotFound) {
			s.log.Error("reading the re-install window failed", "err", err)
		}
		return reinstallRecord{}, false
	}
	var rec reinstallRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return reinstallRecord{}, false
	}
	return rec, time.Now().Before(rec.Until)
}

// reinstallOpen reports whether an installation may now come from another
// portal (or replace the stored application token).
func (s *Server) reinstallOpen(ctx context.Context) bool {
	_, open := s.openReinstall(ctx)
	return open
}

// closeReinstall ends the re-install window.
func (s *Server) closeReinstall(ctx context.Context) error {
	return s.settings.DeleteSealed(ctx, reinstallName)
}

// reinstallProps describes the window for the settings page.
func (s *Server) reinstallProps(ctx context.Context) views.ReinstallProps {
	p := views.ReinstallProps{Minutes: int(reinstallWindow / time.Minute)}
	p.Portal, _ = s.settings.Get(ctx, settings.BitrixPortalURL)
	if rec, open := s.openReinstall(ctx); open {
		p.Open, p.Until = true, formatTime(rec.Until)
	}
	return p
}

// credentialsReinstall starts (or, with cancel=1, ends) the re-install
// window: for reinstallWindow, one installation of the application may
// come from another portal than bitrix.portal_url, which it then replaces,
// and may replace the stored application token. The window is recorded
// sealed in the database and logged.
func (s *Server) credentialsReinstall(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "The form could not be read. Reload the page and try again.")
		return
	}
	if r.PostForm.Get("cancel") != "" {
		if err := s.closeReinstall(ctx); err != nil {
			s.log.Error("console: re-install window not closed", "err", err, "request_id", RequestID(ctx))
			s.redirectWithFlash(w, r, "/admin/credentials#reinstall", views.FlashError, "The re-install could not be cancelled. Try again; the server log has the details.")
			return
		}
		s.log.Warn("console: re-install cancelled", "remote_addr", r.RemoteAddr, "request_id", RequestID(ctx))
		s.redirectWithFlash(w, r, "/admin/credentials#reinstall", views.FlashInfo, "Re-install cancelled: installations from another portal are refused again.")
		return
	}
	now := time.Now().UTC()
	rec := reinstallRecord{Started: now, Until: now.Add(reinstallWindow)}
	b, _ := json.Marshal(rec)
	if err := s.settings.SetSealed(ctx, reinstallName, b); err != nil {
		s.log.Error("console: re-install not started", "err", err, "request_id", RequestID(ctx))
		s.redirectWithFlash(w, r, "/admin/credentials#reinstall", views.FlashError, "The re-install could not be started. Try again; the server log has the details.")
		return
	}
	s.log.Warn("console: re-install started: the next installation may come from another portal",
		"until", rec.Until, "remote_addr", r.RemoteAddr, "request_id", RequestID(ctx))
	s.redirectWithFlash(w, r, "/admin/credentials#reinstall", views.FlashOK,
		"Re-install started: install the application in Bitrix24 before "+formatTime(rec.Until)+". The next installation replaces the portal, the grant and the event token.")
}

// credentialsSave writes the changed settings, all or none. A plain
// setting is written only when its value differs from what the form
// showed, so a value from the environment is not copied into the database
// by saving the page; an empty secret field keeps the stored secret, and
// its "Remove" box deletes it. Every refused value is named next to its
// field, and then nothing is written.
func (s *Server) credentialsSave(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "The form could not be read. Reload the page and try again.")
		return
	}
	current, err := s.settings.List(ctx)
	if err != nil {
		s.log.Error("console: settings", "err", err, "request_id", RequestID(ctx))
		s.errorPage(w, r, http.StatusInternalServerError, "")
		return
	}
	remove := map[string]bool{}
	for _, name := range r.PostForm["clear"] {
		remove[name] = true
	}
	var pairs []settings.Pair
	submitted := map[string]string{}
	errs := map[string]string{}
	for _, e := range current {
		v, sent := r.PostForm[e.Name]
		if !sent && !remove[e.Name] {
			continue
		}
		value := ""
		if sent {
			value = settings.Normalize(v[0])
		}
		switch {
		case e.Secret && remove[e.Name]:
			pairs = append(pairs, settings.Pair{Name: e.Name, Value: ""})
			continue
		case e.Secret && value == "":
			continue // an empty secret field keeps the stored value
		case !e.Secret:
			submitted[e.Name] = value
			if value == e.Value {
				continue
			}
		}
		if err := settings.Validate(e.Name, value); err != nil {
			errs[e.Name] = fieldError(e.Name, err)
			continue
		}
		pairs = append(pairs, settings.Pair{Name: e.Name, Value: value})
	}
	if len(errs) == 0 && len(pairs) > 0 {
		if err = s.settings.Set(ctx, pairs); err != nil {
			s.log.Warn("console: settings not saved", "err", err, "request_id", RequestID(ctx))
		}
	}
	if len(errs) > 0 || err != nil {
		groups, ferr := s.credentialsForm(ctx, submitted, errs)
		if ferr != nil {
			s.log.Error("console: settings", "err", ferr, "request_id", RequestID(ctx))
			s.errorPage(w, r, http.StatusInternalServerError, "")
			return
		}
		msg := "Nothing was saved: " + pluralWords(len(errs), "value needs", "values need") + " a correction, marked below. Secret fields you filled in must be entered again."
		if len(errs) == 0 {
			msg = "Nothing was saved: the settings could not be written. Try again; the server log has the details."
		}
		s.render(w, r, http.StatusUnprocessableEntity, views.Credentials(views.CredentialsProps{
			Console: s.console(r, "Settings", views.AdminCredentials), Groups: groups, Error: msg,
			Reinstall: s.reinstallProps(ctx),
		}))
		return
	}
	if len(pairs) == 0 {
		s.redirectWithFlash(w, r, "/admin/credentials", views.FlashInfo, "Nothing changed.")
		return
	}
	names := make([]string, len(pairs))
	for i, p := range pairs {
		names[i] = p.Name
	}
	s.log.Info("console: settings saved", "keys", names, "request_id", RequestID(ctx))
	msg := "Saved: " + strings.Join(names, ", ") + ". The change applies now."
	if slices.Contains(names, settings.AdminToken) {
		s.redirectKeepingLogin(w, r, "/admin/credentials", views.FlashOK, msg+" Other browsers are signed out.")
		return
	}
	s.redirectWithFlash(w, r, "/admin/credentials", views.FlashOK, msg)
}

// fieldError turns a settings validation error into a sentence for the
// field: without the key name (the field shows it) and starting with what
// to enter.
func fieldError(name string, err error) string {
	if !errors.Is(err, model.ErrInvalid) {
		return "This value is not accepted."
	}
	msg := strings.TrimPrefix(err.Error(), name+": ")
	msg = strings.TrimPrefix(msg, model.ErrInvalid.Error()+": ")
	if rest, ok := strings.CutPrefix(msg, "want "); ok {
		msg = "Enter " + rest
	}
	if msg != "" {
		msg = strings.ToUpper(msg[:1]) + msg[1:]
	}
	return msg
}
