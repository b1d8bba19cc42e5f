"""Genome, variant and region input; tokenizer; windows and the Lightning data module."""
