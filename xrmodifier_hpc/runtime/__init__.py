"""Where the code runs.

Job environment (Slurm, MPI ranks, cores), collective MPI error handling, thread pools,
progress reporting and submitit launch. No physics.
"""
