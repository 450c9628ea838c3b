package handlers

import (
	"net/http"

	"wabridge/views"
)

func (s *Server) landing(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, views.Landing(views.LandingProps{
		Page:    s.page("", views.NavHome),
		Version: s.version,
	}))
}

// docs shows a page of the manual; /docs is its first page.
func (s *Server) docs(w http.ResponseWriter, r *http.Request) {
	pages := s.manual.Pages()
	slug := r.PathValue("slug")
	if slug == "" && len(pages) > 0 {
		slug = pages[0].Slug
	}
	p, ok := s.manual.Page(slug)
	if !ok {
		s.errorPage(w, r, http.StatusNotFound, "The manual has no page by that name. Its contents are listed at /docs.")
		return
	}
	s.render(w, r, http.StatusOK, views.Docs(views.DocsProps{
		Page:    s.page("", views.NavDocs),
		Pages:   pages,
		Current: p,
	}))
}
