"""Reporting: the Markdown run report and the review statistics (judge-human agreement, exports)."""
