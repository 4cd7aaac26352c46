# cython: language_level=3
"""OpenMP thread control for the Cython kernels (the one place that talks to libgomp)."""
cimport openmp


def set_num_threads(int n):
    """Set the number of OpenMP threads every later ``prange`` region uses."""
    openmp.omp_set_num_threads(n)


def get_num_threads():
    """Return the OpenMP thread count a new parallel region would use."""
    return openmp.omp_get_max_threads()
