"""Prompt templates from config/, filled in one place."""
