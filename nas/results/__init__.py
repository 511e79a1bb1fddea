"""Results: trials as pandas, the Pareto front, hypervolume, export files, plots and reports."""
