"""Runnable examples: `python -m examples.folder_report`."""
