"""Model zoo and random architectures for testing netsculpt and any layer handler added to it."""
