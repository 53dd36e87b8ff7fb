"""The dashboard under ``/ui`` (docs/design.md, "The dashboard"): its login session, charts and volume pictures,
below the web layer; the pages themselves are routes in :mod:`app.api.routes.ui`."""
