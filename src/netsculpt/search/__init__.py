"""netsculpt.search."""
