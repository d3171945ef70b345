"""Direct and classical methods as jobs (`task: solve`): problems, methods, and the runner.

The schema half (names, args, which method solves which kind of problem) is
models/catalog/solvers.py; this package is the implementation half.
"""

from worker.solvers.problems import PROBLEMS, Problem, build_problem
from worker.solvers.registry import METHODS
from worker.solvers.runner import run_solve

__all__ = ["METHODS", "PROBLEMS", "Problem", "build_problem", "run_solve"]
