"""Files → paired, rendered rows: loading, pairing and splitting, rendering a row as text."""
