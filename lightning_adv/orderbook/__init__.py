"""Chapter 3 of the thesis: limit order books (LOBSTER data), valuation models and the
order-book attacks (capital-bounded gradient attacks, random orders, universal transfer).

``book`` holds the tensor contract shared by the data and attack code.
"""
from .book import BookSnippet, collate_snippets, swa

__all__ = ["BookSnippet", "collate_snippets", "swa"]

# --- lob-attacks exports (models, propagation, measures, attacks) go above this line ---

# --- lob-data exports (lobster, simulator, snippets) go below this line ---
