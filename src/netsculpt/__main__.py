"""``python -m netsculpt ...`` runs the command line (as ``torchrun -m netsculpt`` does)."""

from netsculpt.cli import main

main()
