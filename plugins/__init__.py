"""prh-bench's built-in plugins, each registered through the ``prh_bench`` entry-point group."""
