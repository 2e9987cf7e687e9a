"""`python -m ibpo_fast.train [--preset NAME] [--key=value ...]`, the same as `ibpo-fast train` (and what
torchrun starts on every process)."""
import sys

from ibpo_fast.train.command import train_main

if __name__ == "__main__":
    sys.exit(train_main())
