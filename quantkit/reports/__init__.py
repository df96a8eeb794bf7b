"""Every report quantkit writes or prints, one module per format: console (rich, what the CLI prints),
records (JSON), markdown, junit, html_page; formats holds how figures read in all of them. Renderers
only: they compute nothing."""
