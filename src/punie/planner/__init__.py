"""The planner: decompose an instruction into a DAG of typed subtasks and pick a worker for each.

``workflow`` is the data format and its DAG utilities, ``workers`` the worker profiles measured by
``punie eval``, ``simulate`` the execution simulator every planner and baseline is scored in.
"""
