"""Train one model x dropout placement, export it and prove the export.

    python train.py                                  # classic Keras CNN, offline-safe
    python train.py --model=tf_layers_cnn --placement=before_activation
    python train.py --flagfile=configs/keras_mnist_cnn.cfg
    python train.py --placement=all --seeds=3 --workdir=runs/study   # a sweep

See `python train.py --helpfull` for every flag.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

from absl import app, logging  # noqa: E402

from dropzoo import errors  # noqa: E402
from dropzoo import flags as flags_lib  # noqa: E402
from dropzoo import sweep  # noqa: E402
from dropzoo import trainer  # noqa: E402


def main(argv):
    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO chatter hides the results
    if len(argv) > 1:
        return errors.fail(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    overwrite = flags_lib.FLAGS.overwrite
    with errors.one_line():
        runs = flags_lib.train_plan()
        if len(runs) == 1:
            config, workdir = runs[0]
            metrics = trainer.train_and_evaluate(config, workdir, overwrite=overwrite)
    if len(runs) > 1:
        with errors.one_line():
            results = sweep.run_sweep(runs, overwrite=overwrite)
        print(sweep.summary(results))
        return 0 if all(isinstance(m, dict) for _, _, m in results) else 1
    print(f"data:         {metrics['data']['source']}")
    print(f"test accuracy {metrics['test_accuracy']:.4f}, loss {metrics['test_loss']:.4f}")
    print(f"export check: {'passed' if metrics['export_check']['passed'] else 'FAILED'}")
    print(f"SavedModel:   {os.path.join(workdir, 'saved_model')}")
    print(f"TensorBoard:  tensorboard --logdir {os.path.join(workdir, 'tensorboard')}")
    print(f"metrics:      {os.path.join(workdir, 'metrics.json')}")
    return 0


if __name__ == "__main__":
    flags_lib.define_train_flags()
    sys.exit(app.run(main, flags_parser=flags_lib.parse_or_exit))
