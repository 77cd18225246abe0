"""The operators' dashboard: server-rendered pages (Jinja2) over the same context as the JSON API."""
