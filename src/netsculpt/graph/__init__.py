"""netsculpt.graph."""
