"""Speed benchmarks: each script measures its comparison in one process and prints a table.

    python benchmarks/train_throughput.py   # classic Keras example vs the trainer's defaults
    python benchmarks/input_pipeline.py     # tf.data training pipeline vs what the model consumes
    python benchmarks/serving.py            # exported serving_default vs model.predict / model(x)

Each script's `run(...)` returns its numbers, so tests call it with tiny settings.
"""
