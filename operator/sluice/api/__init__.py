"""The Pipeline API: pydantic models, the single source of the CRD schema."""
