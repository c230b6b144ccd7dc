"""Recovery: reconciliation with the shims, adoption of unknown bundles, serve's watch."""
