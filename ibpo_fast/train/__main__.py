"""`python -m ibpo_fast.train [--preset NAME] [--key=value ...]`, the same as `ibpo-fast train`."""
import sys

from ibpo_fast.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
