"""Running a training session: in-process and Ray runtimes, checkpoints, metrics, progress."""
