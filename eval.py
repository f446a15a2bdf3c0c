"""Evaluate a SavedModel through its serving signature alone (no Keras objects).

    python eval.py --workdir=runs/keras_mnist_cnn/canonical/seed0
    python eval.py --saved_model=PATH --idx_dir=/usr/share/datasets/fashion-mnist
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

from absl import app, logging  # noqa: E402

from dropzoo import errors  # noqa: E402
from dropzoo import evaluate  # noqa: E402
from dropzoo import flags as flags_lib  # noqa: E402


def main(argv):
    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO chatter hides the results
    if len(argv) > 1:
        return errors.fail(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    f = flags_lib.FLAGS
    if bool(f.saved_model) == bool(f.workdir):
        return errors.fail("give exactly one of --saved_model=PATH or --workdir=DIR")
    saved_model = f.saved_model or os.path.join(f.workdir, "saved_model")
    output = f.output or (os.path.join(f.workdir, "eval.json") if f.workdir else None)
    with errors.one_line():
        result = evaluate.evaluate_on_dataset(saved_model, dataset=f.dataset, idx_dir=f.idx_dir,
                                              tfds_data_dir=f.tfds_data_dir, batch_size=f.batch_size)
        text = json.dumps(result, indent=2, sort_keys=True)
        if output:
            evaluate.write_json(output, result)
    print(text)
    return 0


if __name__ == "__main__":
    flags_lib.define_eval_flags()
    sys.exit(app.run(main, flags_parser=flags_lib.parse_or_exit))
