"""netsculpt.pruning."""
