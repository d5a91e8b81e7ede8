"""Developer tools shared by the demo (scripts/), the benchmarks and the tests.

Never imported by the node pack itself: ComfyUI loads the repository root as a package and only
follows `nodes/` and `lumina/` from there.
"""
