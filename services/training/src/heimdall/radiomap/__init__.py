"""Physics-first localisation: per-receiver radio maps (path loss plus a learned residual field)."""
