"""The command-line entry points: one module per console command (pyproject.toml's
[project.scripts]), each also run by its thin wrapper in tools/. Only those import this
package; the library never does."""
