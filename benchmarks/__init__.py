"""Speed benchmarks: each script measures its comparison in one process and prints a table.

    python benchmarks/train_throughput.py   # classic Keras example vs the trainer's defaults, against conv2 alone
    python benchmarks/input_pipeline.py     # tf.data training pipeline vs what the model consumes
    python benchmarks/serving.py            # exported serving_default vs model.predict / model(x)
    python benchmarks/mc_dropout.py         # MC dropout at T samples vs one deterministic pass
    python benchmarks/step_profile.py       # where a training step's time goes, op by op
    python benchmarks/step_parts.py         # each speed change of a step alone, in turns
    python benchmarks/dropout_precision.py  # dropout in every precision: the table, and the zoo layers' cost
    python benchmarks/allocator.py          # TensorFlow's host allocator settings, in child processes

op_rates.py and common.py are their shared parts (each op's rate alone; machine line, tables, timing rules).
The things compared take turns in one process (or alternating child processes), and the first epoch or call
of each is not timed; a ratio printed by one run is the figure to quote, with the machine line it prints.

Each script's `run(...)` returns its numbers, so tests call it with tiny settings.
"""
