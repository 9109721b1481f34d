"""`python -m salign_cli ...` runs the CLI (also what `torchrun -m salign_cli` launches)."""

from salign_cli.cli.app import main

main()
