"""What happens on the operator's machine: image files and their digests, block indexes and deltas,
cloud-init seeds, the environment of child processes, the trace."""
