"""Agent traces: the tool-using agent loop, its tools, the SQLite trace store, the
recording proxy, and export of traces as mlx-lm ``tools`` training data.

Everything here speaks the one chat format (:mod:`punie.chat.template`) and reads
tool calls with the one parser (:mod:`punie.chat.toolcalls`), so a trace exported
for training is exactly what the model saw and said.
"""
