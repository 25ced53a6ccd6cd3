#!/usr/bin/env bash
# Builds the Hugging Face peers' virtualenv that benchmarks/vs_peers.py runs the peers in, from
# benchmarks/peers/requirements.txt (pinned: torch CPU, transformers, jax/flax/optax). About 2.5 minutes.
#
#   bash benchmarks/peers/build_venv.sh                      # -> /tmp/plm-peers-venv (vs_peers.py's default)
#   bash benchmarks/peers/build_venv.sh /path/to/venv        # elsewhere; then vs_peers.py --peer-python PATH/bin/python
#
# TORCH_INDEX is the extra package index that serves torch's CPU build (default: PyTorch's CPU index);
# set TORCH_INDEX= (empty) where pip finds the wheel otherwise, e.g. in a local find-links directory.
# An existing venv at the same path is reused and brought to the pins.
set -euo pipefail
VENV=${1:-/tmp/plm-peers-venv}
TORCH_INDEX=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}
HERE=$(cd "$(dirname "$0")" && pwd)
start=$(date +%s)
python3 -m venv "$VENV"
index_args=()
[ -n "$TORCH_INDEX" ] && index_args=(--extra-index-url "$TORCH_INDEX")
"$VENV/bin/python" -m pip install "${index_args[@]}" -r "$HERE/requirements.txt"
"$VENV/bin/python" -c "import torch, transformers, jax, flax; print('peers venv:', '$VENV', 'torch', torch.__version__,
  'transformers', transformers.__version__, 'jax', jax.__version__, 'flax', flax.__version__)"
echo "venv build took $(( $(date +%s) - start )) s"
