"""Sluice: a Kubernetes operator for Feldera-style streaming pipelines."""
