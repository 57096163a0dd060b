"""A small app of the test project: teams whose members share QuickBooks connections
(the worked example of docs/ownership.md)."""
