"""What the book's notebooks use: figures, and saying which data and weights a page used.
"""
