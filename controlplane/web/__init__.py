"""The console: server-rendered pages (Jinja2), zh-TW by default with an English switch."""
