"""HTML leaderboards: self-contained pages (plotly's JS embedded once) built from runs' summaries."""
