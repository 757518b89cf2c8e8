"""netsculpt.tasks."""
