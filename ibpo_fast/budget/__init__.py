"""Budget selection, the lower level of IBPO (DESIGN §1, §4): the ILP, its solvers, utilities and
sample accumulation. Timing: ``python -m benchmarks.ilp --out DIR``."""
from .accumulate import SampleBuffer
from .solve import Selection, solve
from .utility import utilities

__all__ = ["solve", "Selection", "utilities", "SampleBuffer"]
