"""`python -m foundation ...` is the `foundation` command (handy under torchrun and srun)."""

from foundation.cli import main

if __name__ == "__main__":  # not when multiprocessing imports it as __mp_main__ (fork server, spawn)
    main()
