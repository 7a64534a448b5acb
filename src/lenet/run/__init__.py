"""A run on disk and in memory: `Run`, its fit phases, sinks, directory, console and plots."""
