"""HTML reports rendered from the jinja2 templates in templates/."""
