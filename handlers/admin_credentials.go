package handlers

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"

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
	}))
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
