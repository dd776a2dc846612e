"""OpenMP's wait policy for the worker, whose threads share their CPUs.

scikit-learn's compiled Lloyd step (:mod:`shared.cluster`) runs its threads under OpenMP
(libgomp), whose threads spin for a while at the end of every parallel loop, waiting for
more work, before they sleep. Where threads outnumber the CPUs that are free, the spinning
threads take the CPUs from the threads with work: a worker of 2 processes with 2 threads
each on 2 CPUs (``KSEG_CORE_THREADS=2``, or a container allowed fewer CPUs than
``os.cpu_count()`` reports) ran 100 one-megapixel jobs at 180 jobs/min instead of ~1,000
with one thread each; with the passive policy it ran them at ~920. Where the CPUs are free,
the passive policy cost a 2-thread job within 3 % (measured here).
"""

from __future__ import annotations

import os

#: libgomp's environment variable, read once when the library is loaded.
WAIT_POLICY_VARIABLE = "OMP_WAIT_POLICY"


def use_passive_openmp() -> str:
    """Make OpenMP threads sleep rather than spin while they wait, unless the environment
    already chose a policy; returns the policy in force.

    Call it before anything imports scikit-learn (which loads libgomp): afterwards it would
    only reach processes started later.
    """
    return os.environ.setdefault(WAIT_POLICY_VARIABLE, "PASSIVE")
