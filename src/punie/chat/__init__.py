"""The one chat template and the one tool-call parser punie uses everywhere.

Training data, agent traces and evaluation all render through the template
punie writes at import and read tool calls back with :mod:`punie.chat.toolcalls`.
"""
