"""`python -m foundation ...` is the `foundation` command (handy under torchrun and srun)."""

from foundation.cli import main

main()
