# cython: language_level=3
"""OpenMP thread control for the Cython kernels (the one place that talks to libgomp)."""
cimport openmp


def set_num_threads(int n):
    """Set the number of OpenMP threads every later ``prange`` region uses."""
    openmp.omp_set_num_threads(n)


def get_num_threads():
    """Return the OpenMP thread count a new parallel region would use."""
    return openmp.omp_get_max_threads()


def get_max_active_levels():
    """Return how many nested parallel regions libgomp may run with more than one thread."""
    return openmp.omp_get_max_active_levels()


def set_max_active_levels(int levels):
    """Set how many nested parallel regions may be active (1: nested regions run serially)."""
    openmp.omp_set_max_active_levels(levels)
