"""The user's own `workers` package (not Ordo's)."""

ORIGIN = "user-project"
