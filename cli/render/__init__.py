"""How history looks to a person: tables, the terminal timeline and the audit page.

Rendering lives in the CLI, not beside the read models it draws: projections fold events
into data (``projections.audit``), and every picture of that data, on a terminal or in a
browser, takes its names and colours from one table (``palette``), so a fact looks the same
in each.
"""
