"""Integrations with existing training code (hook mode, Lightning, DDP)."""
