"""Hand-offs to other QuickBooks libraries (optional extras)."""
