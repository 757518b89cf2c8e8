"""netsculpt.recover."""
