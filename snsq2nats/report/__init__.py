"""Everything people read: terminal tables, Markdown and HTML reports, the live view."""
