"""`python -m quantkit` entry point."""

from __future__ import annotations

from quantkit.launch import main

if __name__ == "__main__":  # not when a worker process imports this module as its __main__
    main()
