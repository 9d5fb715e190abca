"""The loop: describe serially, classify fanned out, select, classify everything, write the outputs."""
