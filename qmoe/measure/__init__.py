"""Measurement: how fast, how big, how much energy, taken the same way for every model and runtime.

`timing` (the latency harness, parameter and byte counts, the machine a figure was taken on) <- `ram` (peak RAM in a
fresh process) and `energy` (codecarbon, the paper's deployment projection) <- `suite` (every figure of one trained
model as the columns of its results row, under the machine's measurement lock). Within the layer imports point left
only. May import the core, audio, datasets, the model zoo and deployment; never the experiment runner, analysis or
the app.
"""
