"""Reports: plots (PNG) and one self-contained report.html per run, built from the run's artifacts only."""
