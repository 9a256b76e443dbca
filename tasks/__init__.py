"""Prefect tasks: thin wrappers over narro's pipeline steps; retries live in the decorators."""
