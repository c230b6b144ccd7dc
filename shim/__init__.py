"""Application services: TaskManager, ShimManager and what they need (shim/ports.py)."""

DEFAULT_RUNTIME = "io.containerd.runc.v2"
