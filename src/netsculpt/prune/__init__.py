"""netsculpt.prune."""
