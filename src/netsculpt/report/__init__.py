"""netsculpt.report."""
