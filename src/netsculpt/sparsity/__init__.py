"""netsculpt.sparsity."""
