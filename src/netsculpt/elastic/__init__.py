"""netsculpt.elastic."""
