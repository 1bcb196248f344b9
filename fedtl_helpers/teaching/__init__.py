"""What the book's notebooks use: figures, and saying which data and weights a page used.

The modules are also importable under their old flat names (``fedtl_helpers.<module>``).
"""
