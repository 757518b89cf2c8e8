"""netsculpt.export."""
