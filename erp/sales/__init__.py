"""Sales data of each organization: orders and their lines.

Shared by the features that read it (reports) and write it (data_processing), which may not
import each other; so it sits in its own layer below them (see pyproject.toml's contracts).
"""
