"""Where the Hydra configs are: `conf/` beside the package in a checkout, inside it once installed."""

from pathlib import Path

_HERE = Path(__file__).resolve().parent
# A checkout (or editable install) keeps conf/ at the top; `pip install .` ships it as mnist_compare/conf.
CONF_DIR = next((p for p in (_HERE.parent / "conf", _HERE / "conf") if (p / "train.yaml").is_file()), _HERE / "conf")
