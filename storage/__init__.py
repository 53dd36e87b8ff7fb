"""File helpers shared by every package (no project imports: the bottom of the dependency graph)."""
