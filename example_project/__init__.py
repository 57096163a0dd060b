"""A small site using qb_oauth: `make demo` runs it offline (see run_demo.py)."""
