"""The search: its settings, the objective, the budget, backends, plugins, stop signals and progress."""
