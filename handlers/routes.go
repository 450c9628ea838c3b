package handlers

import (
	"net/http"
)

// defaultBodyLimit caps the body of every request whose path has no
// limit of its own in bodyLimits.
const defaultBodyLimit = 1 << 20

// bodyLimits are the paths that accept larger bodies; their handlers read
// within the limit themselves.
var bodyLimits = map[string]int64{
	"/webhook/whatsapp": whatsappBodyLimit,
}

// routes declares every route of the server in one place.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()

	mux.HandleFunc("GET /{$}", s.landing)
	mux.HandleFunc("GET /docs", s.docs)
	mux.HandleFunc("GET /docs/{slug}", s.docs)
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("GET /webhook/whatsapp", s.whatsappHandshake)
	mux.HandleFunc("POST /webhook/whatsapp", s.whatsappWebhook)
	mux.HandleFunc("POST /bitrix/events", s.bitrixEvents)
	mux.HandleFunc("GET /bitrix/install", s.bitrixInstall)
	mux.HandleFunc("POST /bitrix/install", s.bitrixInstall)
	mux.HandleFunc("POST /bitrix/placement", s.bitrixPlacement)
	mux.HandleFunc("GET /media/{id}", s.media)
	if s.metrics != nil {
		mux.Handle("GET /metrics", s.adminOrBearer(s.metrics.Handler()))
	}
	mux.Handle("GET /static/", s.assets)
	s.adminRoutes(mux)

	// Anything else: a 404 page rather than the mux's plain text.
	mux.HandleFunc("/", s.notFound)

	var h http.Handler = mux
	h = limitBody(defaultBodyLimit, bodyLimits, h)
	h = securityHeaders(s.secureSite, h)
	h = s.recoverPanics(h)
	h = logRequests(s.log, h)
	h = s.resolveClient(h)
	return h
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.errorPage(w, r, http.StatusNotFound, "")
}
