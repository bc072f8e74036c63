"""Reports of the county application: budget execution, general ledger, trial balance, balance sheet.

Each report is a query module that aggregates in SQL and returns a `Sheet` (sheet.py); the HTML,
XLSX and ODS writers render any Sheet, so every report gets every format with the same numbers.
"""
