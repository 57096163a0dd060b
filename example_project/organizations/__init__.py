"""The example site's organization mode (``QB_DEMO_ORGANIZATIONS=1``): an organization's
QuickBooks companies are shared by its members (docs/ownership.md)."""
