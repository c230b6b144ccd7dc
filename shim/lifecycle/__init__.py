"""Running tasks: shims started and found, working bundles, TaskManager and its handles."""
