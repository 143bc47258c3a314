"""Scripts that run on the hosts, shipped as their own source: standard library only, Python >= 3.7."""
