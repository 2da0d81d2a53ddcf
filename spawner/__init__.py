"""Spawners for NothingAI notebooks: a local one for a single machine (and, later, Kubernetes)."""
