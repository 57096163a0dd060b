"""qb_oauth: QuickBooks Online connections for Django over Intuit OAuth 2.0."""

__version__ = "0.1.0"
