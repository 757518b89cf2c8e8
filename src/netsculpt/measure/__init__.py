"""netsculpt.measure."""
