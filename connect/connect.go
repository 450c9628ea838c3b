// Package connect registers wabridge's WhatsApp connector in a Bitrix24
// Contact Center and subscribes the bridge to the operators' events. The
// command `wabridge bitrix register-connector` and the console's "Register
// connector" button both call Register, so they do exactly the same thing.
package connect

import (
	"context"
	"errors"
	"strings"

	"wabridge/bitrix"
)

// Events are the portal events the bridge subscribes to at
// {public_url}/bitrix/events: the operators' messages, and the removal of
// the connector from a line.
var Events = []string{"OnImConnectorMessageAdd", "OnImConnectorLineDelete", "OnImConnectorStatusDelete"}

// Client is what Register needs of the Bitrix24 REST client; *bitrix.Client
// has it.
type Client interface {
	Register(ctx context.Context, p bitrix.RegisterParams) error
	Unregister(ctx context.Context, connector string) error
	EventGet(ctx context.Context) ([]bitrix.BoundEvent, error)
	EventBind(ctx context.Context, b bitrix.EventBinding) error
	EventUnbind(ctx context.Context, b bitrix.EventBinding) (int, error)
}

// Options say what to register.
type Options struct {
	// PublicURL is app.public_url, the address the portal calls; a
	// trailing slash is ignored. Required.
	PublicURL string
	// Connector is the connector id (bitrix.connector_id). Required.
	Connector string
	// Fresh unbinds the events and unregisters the connector first, which
	// repairs a subscription a re-installation lost.
	Fresh bool
	// Progress, if set, hears one line in plain words for each change made
	// or found already in place, in order.
	Progress func(line string)
}

// Error is a failed step of Register. Its text is the step and the
// portal's reason in plain words, e.g. "bind OnImConnectorMessageAdd: the
// wabridge application is not installed in Bitrix24: install it, then
// retry"; Unwrap gives the client's error.
type Error struct {
	// Step names what failed ("register", "event.get", "bind EVENT",
	// "unbind EVENT"); empty for the registration itself.
	Step string
	Err  error
}

func (e *Error) Error() string {
	if e.Step == "" {
		return bitrix.Reason(e.Err)
	}
	return e.Step + ": " + bitrix.Reason(e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrNoPublicURL is returned when Options.PublicURL is empty: the portal
// would not know where to send the events.
var ErrNoPublicURL = errors.New("app.public_url is not set: wabridge config set app.public_url=https://your-bridge.example.com")

// EventHandler returns the address the portal posts events to.
func EventHandler(publicURL string) string {
	return strings.TrimRight(publicURL, "/") + "/bitrix/events"
}

// Register registers the connector (imconnector.register, with the
// placement page {public_url}/bitrix/placement) and binds each of Events to
// {public_url}/bitrix/events unless it is bound there already, so running it
// twice changes nothing the second time. It returns ErrNoPublicURL, or an
// *Error naming the step that failed; the steps before it stay done.
func Register(ctx context.Context, c Client, o Options) error {
	if strings.TrimSpace(o.PublicURL) == "" {
		return ErrNoPublicURL
	}
	if o.Connector == "" {
		panic("connect: Register: empty connector id")
	}
	say := o.Progress
	if say == nil {
		say = func(string) {}
	}
	pub := strings.TrimRight(o.PublicURL, "/")
	handler := EventHandler(pub)
	if o.Fresh {
		for _, ev := range Events {
			n, err := c.EventUnbind(ctx, bitrix.EventBinding{Event: ev, Handler: handler})
			if err != nil {
				return &Error{Step: "unbind " + ev, Err: err}
			}
			if n > 0 {
				say("unbound " + ev)
			}
		}
		// A connector that was never registered cannot be unregistered;
		// that is no reason to stop.
		if err := c.Unregister(ctx, o.Connector); err != nil {
			say("unregister " + o.Connector + ": " + bitrix.Reason(err) + " (continuing)")
		} else {
			say("unregistered connector " + o.Connector)
		}
	}
	if err := c.Register(ctx, bitrix.RegisterParams{
		ID:               o.Connector,
		Name:             bitrix.DefaultConnectorName,
		Icon:             bitrix.DefaultIcon(),
		PlacementHandler: pub + "/bitrix/placement",
	}); err != nil {
		return &Error{Err: err}
	}
	say("registered connector " + o.Connector + " (placement " + pub + "/bitrix/placement)")
	bound, err := c.EventGet(ctx)
	if err != nil {
		return &Error{Err: err}
	}
	for _, ev := range Events {
		if HasBinding(bound, ev, handler) {
			say(ev + " already bound to " + handler)
			continue
		}
		if err := c.EventBind(ctx, bitrix.EventBinding{Event: ev, Handler: handler}); err != nil {
			return &Error{Step: "bind " + ev, Err: err}
		}
		say("bound " + ev + " to " + handler)
	}
	return nil
}

// Missing returns the names of Events that are not bound to handler among
// bound, in the order of Events; none means the subscription is complete.
func Missing(bound []bitrix.BoundEvent, handler string) []string {
	var out []string
	for _, ev := range Events {
		if !HasBinding(bound, ev, handler) {
			out = append(out, ev)
		}
	}
	return out
}

// HasBinding reports whether event is bound to handler; the portal reports
// event names in upper case, so they compare without regard to case.
func HasBinding(bound []bitrix.BoundEvent, event, handler string) bool {
	for _, b := range bound {
		if strings.EqualFold(b.Event, event) && b.Handler == handler {
			return true
		}
	}
	return false
}
