"""Recording facts on task histories: the one locked path that appends events."""
