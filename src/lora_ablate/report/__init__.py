"""Reports: records aggregated into tables, figures and HTML/Markdown. Imports no torch."""
