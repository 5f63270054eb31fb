"""Report: from per-prompt scores to the page.

Scorers (`scorers`), metric rows and the CSV (`metrics`), paired statistics (`stats`),
dependence between metrics (`analysis`), plots (`plots`) and the HTML page (`page`).
Nothing here imports a stage module.
"""
