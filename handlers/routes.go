package handlers

import (
	"net/http"
)

// Body limits. Every route gets defaultBodyLimit unless it sets its own.
const defaultBodyLimit = 1 << 20

// routes declares every route of the server in one place.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()

	mux.HandleFunc("GET /{$}", s.landing)
	mux.HandleFunc("GET /docs", s.docs)
	mux.HandleFunc("GET /docs/{slug}", s.docs)
	mux.HandleFunc("GET /health", s.health)
	mux.Handle("GET /static/", s.assets)

	// Anything else: a 404 page rather than the mux's plain text.
	mux.HandleFunc("/", s.notFound)

	var h http.Handler = mux
	h = limitBody(defaultBodyLimit, h)
	h = securityHeaders(h)
	h = s.recoverPanics(h)
	h = logRequests(s.log, h)
	return h
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.errorPage(w, r, http.StatusNotFound, "")
}
