"""The command-line layer: every job of the project behind one console script. The only
place that wires the golden model to the simulator."""
